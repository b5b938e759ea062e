//! What a runbook, a plan and each step say: `/runbook list`, dry runs and
//! approval cards (with each SQL step's preview run).

use super::{rows_text, statement, toml_to_json};
use crate::engine::Engine;
use crate::event::Actor;
use crate::runbook::{Plan, Runbook, Step};

impl Engine {
    /// `/runbook list`.
    pub(in crate::engine) fn runbook_list_text(&self) -> String {
        let mut runbooks = self.registry.runbooks().peekable();
        if runbooks.peek().is_none() {
            return "No runbooks are configured (`[bot] runbooks_dir`; see docs/runbooks.md).".into();
        }
        let mut out = String::from("Runbooks (`/runbook run <name> [name=value]… [--dry-run]`):");
        for runbook in runbooks {
            out.push_str(&format!("\n• {} ({}) — {}", runbook.name, runbook.environment, runbook.summary));
            for p in &runbook.params {
                out.push_str(&format!("\n    {}", p.describe()));
            }
            let steps: Vec<&str> = runbook.steps.iter().map(Step::kind).collect();
            out.push_str(&format!("\n    steps: {}", steps.join(" → ")));
        }
        out
    }

    /// What step `index` (from 0) of `plan` will do, in one or more lines.
    pub(super) fn describe_step(&self, plan: &Plan, index: usize, id: &str, requester: &Actor) -> String {
        let n = plan.steps.len();
        let head = format!("{}/{n}", index + 1);
        match &plan.steps[index] {
            step @ (Step::Restart { service } | Step::Rollback { service } | Step::Scale { service, .. }) => {
                let label = self
                    .config
                    .services
                    .get(service)
                    .and_then(|s| self.executors.for_service(s).label())
                    .map(|l| format!(" {l}"))
                    .unwrap_or_default();
                let what = match step {
                    Step::Scale { replicas, .. } => format!("scale {service} to {replicas} replicas"),
                    Step::Rollback { .. } => format!("rollback {service} to the previous revision"),
                    _ => format!("restart {service}"),
                };
                format!("{head} {what}{label}")
            }
            Step::WaitHealthy { service, timeout } => {
                format!("{head} wait until {service} is healthy (at most {timeout})")
            }
            step @ Step::Sql { target, params, read_only, max_rows, timeout, .. } => {
                let statement = statement(step, &plan.values).expect("an sql step");
                let values: Vec<String> = statement
                    .params
                    .iter()
                    .zip(params)
                    .enumerate()
                    .map(|(i, (v, name))| format!("${} = {} ({name})", i + 1, v.shown()))
                    .collect();
                let simulated =
                    if self.config.databases.get(target).is_some_and(|d| d.simulated) { " [simulated]" } else { "" };
                format!(
                    "{head} sql on database {target}{simulated}{}, at most {max_rows} row(s), timeout {timeout}:\n    {}\n    with {}",
                    if *read_only { " (read-only)" } else { "" },
                    statement.text,
                    if values.is_empty() { "no parameters".to_string() } else { values.join(", ") }
                )
            }
            Step::Http { target, body } => {
                let configured = self.config.http.get(target);
                let (method, url) =
                    configured.map(|t| (t.method.as_str(), t.url.as_str())).unwrap_or(("POST", "(not configured)"));
                let key = configured
                    .and_then(|t| t.api_key_env.as_ref().zip(t.api_key_header.as_ref()))
                    .map(|(var, header)| format!(", {header} from ${var}"))
                    .unwrap_or_default();
                let simulated = if configured.is_some_and(|t| t.simulated) { " [simulated]" } else { "" };
                let body = body.as_ref().map(|b| toml_to_json(b).to_string()).unwrap_or_else(|| "no body".into());
                format!("{head} http {target}{simulated}: {method} {url}{key}\n    body {body}")
            }
            Step::K8sJob { template, env } => match self.config.jobs.get(template) {
                Some(t) => {
                    let name = crate::action::kubernetes::job_name(template, id, index + 1);
                    let spec = crate::action::kubernetes::job_spec(&name, t, env, id, requester.as_str());
                    let simulated = if t.simulated { " [simulated]" } else { "" };
                    format!(
                        "{head} k8s_job {template}{simulated}: Job {}/{name}, image {}, command {:?}, env {:?}, deadline {}, no retries\n    {}",
                        t.namespace,
                        t.image,
                        t.command,
                        env,
                        crate::clock::format_duration(t.deadline),
                        spec
                    )
                }
                None => format!("{head} k8s_job {template} (not configured)"),
            },
        }
    }

    /// Every step as it would run, with each SQL step's read-only preview
    /// run now (the rows it would touch). Changes nothing.
    pub(super) async fn plan_text(&self, runbook: &Runbook, plan: &Plan, id: &str, requester: &Actor) -> String {
        let gated: Vec<String> =
            plan.gated.iter().enumerate().filter(|(_, g)| **g).map(|(i, _)| (i + 1).to_string()).collect();
        let approval = if gated.is_empty() {
            "no step needs approval".to_string()
        } else {
            format!("approval covers step(s) {}", gated.join(", "))
        };
        let mut out =
            format!("runbook {} in {} — plan {}, {approval}:", runbook.name, runbook.environment, plan.short_digest());
        for index in 0..plan.steps.len() {
            out.push('\n');
            out.push_str(&self.describe_step(plan, index, id, requester));
            let step = &plan.steps[index];
            let Step::Sql { target, preview, read_only, .. } = step else { continue };
            if preview.is_none() && !read_only {
                continue;
            }
            let Some(database) = self.config.databases.get(target) else { continue };
            if database.simulated {
                out.push_str("\n    preview: [simulated] no database to ask");
                continue;
            }
            let statement = statement(step, &plan.values).expect("an sql step");
            let found = match database.url(target) {
                Ok(url) => crate::action::sql::preview(&url, &statement).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match found {
                Ok(rows) => out.push_str(&format!(
                    "\n    preview: {} row(s) would be touched{}",
                    rows.rows,
                    rows_text(&rows, 10)
                )),
                Err(e) => out.push_str(&format!("\n    preview failed: {e}")),
            }
        }
        out
    }
}
