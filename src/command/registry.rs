//! Loads `commands/*.toml`, checks every file against the actions the bot knows,
//! resolves names and aliases, suggests near misses, and renders `/help`.
//! Changing a command file needs a restart, never a recompile.

use super::spec::{ArgKind, CommandSpec};
use crate::config::Problem;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The `*.toml` files of a folder, sorted (so problems come in a stable
/// order), each with its text; one that cannot be read is a problem.
fn toml_files(entries: std::fs::ReadDir, problems: &mut Vec<Problem>) -> Vec<(std::path::PathBuf, String)> {
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => {
                problems.push(Problem::new(&path, "", format!("cannot read: {e}"), "check the file's permissions"))
            }
        }
    }
    files
}

/// Reads `dir/*.toml` as runbooks.
fn read_runbooks(dir: &Path, problems: &mut Vec<Problem>) -> BTreeMap<String, Arc<crate::runbook::Runbook>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(Problem::new(
                dir,
                "",
                format!("cannot read the runbooks directory: {e}"),
                "set bot.runbooks_dir to the folder holding the runbook files, or leave it out",
            ));
            return BTreeMap::new();
        }
    };
    let files = toml_files(entries, problems);
    parse_runbooks(files.iter().map(|(p, t)| (p.as_path(), t.as_str())), problems)
}

/// Runbook files, each on its own (one bad file does not hide the others);
/// a name used twice is refused. Checks against the configuration come later
/// ([`crate::runbook::Runbook::check`]), once both are loaded.
fn parse_runbooks<'a>(
    sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<crate::runbook::Runbook>> {
    let mut out = BTreeMap::new();
    for (path, text) in sources {
        let runbook: crate::runbook::Runbook = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let message = e.message().trim().to_string();
                let hint = if message.starts_with("steps[") {
                    "see docs/runbooks.md for the step kinds and their fields".to_string()
                } else {
                    toml_hint(&e, text)
                };
                problems.push(Problem::new(path, "", message, hint));
                continue;
            }
        };
        let valid = !runbook.name.is_empty()
            && runbook.name.len() <= 64
            && runbook.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            problems.push(Problem::new(
                path,
                "name",
                format!("`{}` is not a runbook name", runbook.name),
                "use lowercase letters, digits and `-` (at most 64)",
            ));
        } else if out.contains_key(&runbook.name) {
            problems.push(Problem::new(
                path,
                "name",
                format!("runbook `{}` is defined twice", runbook.name),
                "rename one of them",
            ));
        } else {
            out.insert(runbook.name.clone(), Arc::new(runbook));
        }
    }
    out
}

/// Every loaded command, by canonical name, plus an alias index.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    /// By whole invocation: `deploy`, `incident declare`.
    commands: BTreeMap<String, Arc<CommandSpec>>,
    aliases: BTreeMap<String, String>,
    /// Group names (`incident`), each typed before one of its commands.
    groups: std::collections::BTreeSet<String>,
    /// `runbooks/*.toml` beside the command files, by name.
    runbooks: BTreeMap<String, Arc<crate::runbook::Runbook>>,
}

impl Registry {
    /// Reads every `*.toml` in `dir` (sorted, so errors come in a stable order)
    /// and reports every problem found, not just the first.
    pub fn load_dir(dir: &Path) -> Result<Registry, Vec<Problem>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return Err(vec![Problem::new(
                    dir,
                    "",
                    format!("cannot read the commands directory: {e}"),
                    "set bot.commands_dir to the folder holding deploy.toml, status.toml, …",
                )]);
            }
        };
        let mut problems = Vec::new();
        let files = toml_files(entries, &mut problems);
        match Registry::from_sources(files.iter().map(|(p, t)| (p.as_path(), t.as_str()))) {
            Ok(registry) if problems.is_empty() => Ok(registry),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }

    /// Builds a registry from (file name, TOML text) pairs.
    pub fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Result<Registry, Vec<Problem>> {
        let mut registry = Registry::default();
        let mut problems = Vec::new();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for (path, text) in sources {
            let spec: CommandSpec = match toml::from_str(text) {
                Ok(spec) => spec,
                Err(e) => {
                    problems.push(Problem::new(path, "", e.message().to_string(), toml_hint(&e, text)));
                    continue;
                }
            };
            let before = problems.len();
            validate_spec(path, &spec, &mut problems);
            let mut spec = spec;
            if let Some(group) = spec.group.clone() {
                // Kept whole from here on: `incident declare`.
                spec.name = format!("{group} {}", spec.name);
                spec.aliases = spec.aliases.iter().map(|a| format!("{group} {a}")).collect();
            }
            for name in std::iter::once(&spec.name).chain(&spec.aliases) {
                if let Some(other) = owner.get(name) {
                    problems.push(Problem::new(
                        path,
                        "name",
                        format!("`{name}` is already used by command `{other}`"),
                        "pick another name or alias",
                    ));
                } else {
                    owner.insert(name.clone(), spec.name.clone());
                }
            }
            if problems.len() == before {
                if let Some(group) = &spec.group {
                    registry.groups.insert(group.clone());
                }
                for alias in &spec.aliases {
                    registry.aliases.insert(alias.clone(), spec.name.clone());
                }
                registry.commands.insert(spec.name.clone(), Arc::new(spec));
            }
        }
        if registry.commands.is_empty() && problems.is_empty() {
            problems.push(Problem::new(
                Path::new("commands/"),
                "",
                "no command files found".into(),
                "ship at least help.toml; see the README's command-file reference",
            ));
        }
        for group in &registry.groups {
            if let Some(plain) = registry.find(group) {
                problems.push(Problem::new(
                    Path::new("commands/"),
                    "group",
                    format!("`{group}` is both a group and the command `/{}`", plain.name),
                    "rename one of them",
                ));
            }
        }
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(problems)
        }
    }

    /// Adds the runbooks in `dir` (`[bot] runbooks_dir`).
    pub fn load_runbooks(&mut self, dir: &Path) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        self.runbooks = read_runbooks(dir, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Adds runbooks (file name, TOML text), as `load_runbooks` does from a folder.
    pub fn with_runbooks<'a>(
        mut self,
        sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Registry, Vec<Problem>> {
        let mut problems = Vec::new();
        self.runbooks = parse_runbooks(sources, &mut problems);
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
    }

    pub fn runbook(&self, name: &str) -> Option<&Arc<crate::runbook::Runbook>> {
        self.runbooks.get(name)
    }

    pub fn runbooks(&self) -> impl Iterator<Item = &Arc<crate::runbook::Runbook>> {
        self.runbooks.values()
    }

    pub fn runbook_names(&self) -> impl Iterator<Item = &str> {
        self.runbooks.keys().map(String::as_str)
    }

    /// Whether `name` is a group (`incident`) rather than a command.
    pub fn is_group(&self, name: &str) -> bool {
        self.groups.contains(name)
    }

    /// The commands of group `group`, by their word in it.
    pub fn group_members(&self, group: &str) -> Vec<&Arc<CommandSpec>> {
        self.commands.values().filter(|c| c.group.as_deref() == Some(group)).collect()
    }

    /// Top-level names as typed after the slash: every command outside a
    /// group (with its aliases) and every group once.
    pub fn top_level_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .commands
            .values()
            .filter(|c| c.group.is_none())
            .flat_map(|c| std::iter::once(c.name.clone()).chain(c.aliases.iter().cloned()))
            .chain(self.groups.iter().cloned())
            .collect();
        names.sort();
        names
    }

    /// `/help`, `/help deploy` or `/help incident`.
    pub fn render_help(&self, command: Option<&str>) -> String {
        match command {
            Some(group) if self.is_group(group) => self.render_group(group),
            Some(name) => match self.find(name) {
                Some(spec) => self.render_command(spec),
                None => self.render_overview(),
            },
            None => self.render_overview(),
        }
    }

    /// `/help incident`: every command of the group, in full.
    pub fn render_group(&self, group: &str) -> String {
        let members = self.group_members(group);
        let mut out = format!("/{group} has {} commands:\n", members.len());
        for spec in members {
            out.push_str(&format!("\n{}\n", self.render_command(spec)));
        }
        out.trim_end().to_string()
    }

    pub fn find(&self, name: &str) -> Option<&Arc<CommandSpec>> {
        let canonical = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.commands.get(canonical)
    }

    pub fn suggest(&self, typed: &str) -> Option<String> {
        let names = self.commands.keys().chain(self.aliases.keys()).chain(&self.groups).map(String::as_str);
        closest(typed, names).map(|n| self.find(&n).map(|s| s.name.clone()).unwrap_or(n))
    }

    pub fn commands(&self) -> impl Iterator<Item = &Arc<CommandSpec>> {
        self.commands.values()
    }

    /// Every policy key some command uses; config rules are checked against it.
    pub fn policy_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.commands.values().map(|c| c.policy_key().to_string()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The commands using policy key `policy`, with the class each belongs to.
    pub fn classes_of(&self, policy: &str) -> Vec<(String, super::Class)> {
        self.commands
            .values()
            .filter(|c| c.policy_key() == policy)
            .map(|c| (format!("/{}", c.name), c.action.class()))
            .collect()
    }

    /// `/help` with no argument: one line per command.
    pub fn render_overview(&self) -> String {
        let width = self.commands.values().map(|c| c.usage.chars().count()).max().unwrap_or(0);
        let mut out = String::from("Commands:\n");
        for spec in self.commands.values() {
            out.push_str(&format!("  {:<width$}  {}\n", spec.usage, spec.summary));
        }
        out.push_str("Type `/help <command>` for details.");
        out
    }

    /// `/help deploy`.
    pub fn render_command(&self, spec: &CommandSpec) -> String {
        let mut out = format!("/{} — {}\nUsage: {}\n", spec.name, spec.summary, spec.usage);
        if let Some(description) = &spec.description {
            out.push_str(description.trim_end());
            out.push('\n');
        }
        for arg in &spec.args {
            let optional = if arg.required { "" } else { " (optional)" };
            let help = arg.help.as_deref().unwrap_or("");
            out.push_str(&format!("  <{}>{optional}: {}. {help}\n", arg.name, arg.kind.describe()));
        }
        for flag in &spec.flags {
            out.push_str(&format!(
                "  --{}: {}. {}\n",
                flag.name,
                flag.kind.describe(),
                flag.help.as_deref().unwrap_or("")
            ));
        }
        if !spec.aliases.is_empty() {
            out.push_str(&format!(
                "Aliases: {}\n",
                spec.aliases.iter().map(|a| format!("/{a}")).collect::<Vec<_>>().join(", ")
            ));
        }
        if !spec.examples.is_empty() {
            out.push_str("Examples:\n");
            for example in &spec.examples {
                out.push_str(&format!("  {example}\n"));
            }
        }
        out.trim_end().to_string()
    }
}

fn toml_hint(error: &toml::de::Error, text: &str) -> String {
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!("fix the TOML near line {line}")
        }
        None => "fix the TOML syntax".into(),
    }
}

fn is_word(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn validate_spec(path: &Path, spec: &CommandSpec, problems: &mut Vec<Problem>) {
    let mut report = |key: &str, message: String, hint: &str| problems.push(Problem::new(path, key, message, hint));
    for (key, name) in std::iter::once(("name", &spec.name)).chain(spec.aliases.iter().map(|a| ("aliases", a))) {
        if !is_word(name) {
            report(
                key,
                format!("`{name}` is not a command name"),
                "use lowercase letters, digits and `-`, starting with a letter, at most 32",
            );
        }
    }
    if !is_word(spec.policy_key()) {
        report(
            "policy",
            format!("`{}` is not a policy key", spec.policy_key()),
            "use lowercase letters, digits and `-`",
        );
    }
    if spec.mutates != spec.action.mutates_infrastructure() {
        report(
            "mutates",
            format!(
                "action `{:?}` {} infrastructure",
                spec.action,
                if spec.action.mutates_infrastructure() { "changes" } else { "does not change" }
            ),
            &format!("set mutates = {}", spec.action.mutates_infrastructure()),
        );
    }
    let mut seen_optional = false;
    let mut text_args = 0;
    for (i, arg) in spec.args.iter().enumerate() {
        let key = format!("args[{i}]");
        if spec.args[..i].iter().any(|a| a.name == arg.name) {
            report(&key, format!("argument `{}` is declared twice", arg.name), "give each argument one entry");
        }
        // An optional incident id may come first: only `INC-n` is taken as one.
        let optional_before = spec.args[..i].iter().any(|a| !a.required && a.kind != ArgKind::IncidentId);
        if arg.required && seen_optional && optional_before && !matches!(arg.kind, ArgKind::Text { .. }) {
            report(
                &key,
                format!("required argument `{}` follows an optional one", arg.name),
                "put optional arguments last",
            );
        }
        seen_optional |= !arg.required;
        if matches!(arg.kind, ArgKind::Text { .. }) {
            text_args += 1;
        }
        if arg.kind == ArgKind::Switch {
            report(&key, "a switch is only valid as a flag".into(), "move it to [[flags]]");
        }
        check_kind(&arg.kind, &key, &mut report);
        if !spec.action.needed_args().iter().any(|(name, _, _)| *name == arg.name) {
            let names: Vec<&str> = spec.action.needed_args().iter().map(|(n, _, _)| *n).collect();
            report(
                &key,
                format!("action `{:?}` does not read an argument named `{}`", spec.action, arg.name),
                &format!("use the names it reads: {}", names.join(", ")),
            );
        }
    }
    if text_args > 1 {
        report("args", "more than one text argument".into(), "a command can have one free-text argument");
    }
    for (name, kind_ok, required) in spec.action.needed_args() {
        match spec.args.iter().find(|a| a.name == *name) {
            None if *required => report(
                "args",
                format!("action `{:?}` needs an argument named `{name}`", spec.action),
                "add it under [[args]]",
            ),
            Some(arg) if !kind_ok(&arg.kind) => report(
                "args",
                format!("argument `{name}` has the wrong type for action `{:?}`", spec.action),
                "see the README's command-file reference",
            ),
            Some(arg) if *required && !arg.required => {
                report("args", format!("argument `{name}` must be required"), "drop `required = false`")
            }
            _ => {}
        }
    }
    let known = spec.action.flags();
    for (i, flag) in spec.flags.iter().enumerate() {
        let key = format!("flags[{i}]");
        if spec.flags[..i].iter().any(|f| f.name == flag.name) {
            report(&key, format!("flag `{}` is declared twice", flag.name), "give each flag one entry");
        }
        check_kind(&flag.kind, &key, &mut report);
        match known.iter().find(|(name, _, _)| *name == flag.name) {
            None if known.is_empty() => report(
                &key,
                format!("action `{:?}` reads no flags; `{}` would be ignored", spec.action, flag.name),
                "remove the flag",
            ),
            None => {
                let names: Vec<&str> = known.iter().map(|(n, _, _)| *n).collect();
                report(
                    &key,
                    format!("action `{:?}` does not read a flag named `{}`", spec.action, flag.name),
                    &format!("use the flags it reads: {}", names.join(", ")),
                )
            }
            Some((_, kind_ok, _)) if !kind_ok(&flag.kind) => report(
                &key,
                format!("flag `{}` has the wrong type for action `{:?}`", flag.name, spec.action),
                "see the command-file reference (docs/commands.md)",
            ),
            Some(_) => {}
        }
    }
    if let Some(group) = &spec.group {
        if !is_word(group) {
            report("group", format!("`{group}` is not a group name"), "use lowercase letters, digits and `-`");
        }
    }
}

fn check_kind(kind: &ArgKind, key: &str, report: &mut impl FnMut(&str, String, &str)) {
    match kind {
        ArgKind::Integer { min: Some(a), max: Some(b) } if a > b => {
            report(key, format!("min {a} is above max {b}"), "swap them")
        }
        ArgKind::Choice { values } if values.is_empty() => {
            report(key, "a choice needs values".into(), "list the allowed words in values = [..]")
        }
        ArgKind::Duration { max: Some(m) } => {
            if let Err(e) = crate::clock::parse_duration(m) {
                report(key, e, "write max like 24h");
            }
        }
        _ => {}
    }
}

/// The candidate nearest to `typed` by edit distance, if near enough to be a typo.
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (typed.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(typed, c), c))
        .filter(|(d, c)| *d <= limit || (typed.len() >= 3 && c.starts_with(typed)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(prev2[j - 2] + 1);
            }
        }
        prev2 = std::mem::replace(&mut prev, row);
    }
    prev[b.len()]
}
