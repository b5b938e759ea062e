//! The simulated backend: an in-memory cluster with versions, revisions,
//! replicas and rollouts that take visible steps. It exists so the demo and the
//! tests can run every command with no cloud account. Every message it produces
//! says it is simulated.

use super::{Action, ActionError, Executor, Outcome, Progress, RunContext};
use crate::audit::BoxFuture;
use crate::config::{Backend, Service};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct Revision {
    number: u32,
    version: String,
}

#[derive(Debug, Clone)]
struct SimService {
    revisions: Vec<Revision>,
    /// Revision number serving traffic.
    current: u32,
    replicas: u32,
    /// Replicas up on the current revision (lower while a rollout runs).
    ready: u32,
    restarts: u32,
    last_failure: Option<String>,
}

impl SimService {
    fn version(&self) -> &str {
        self.revisions.iter().find(|r| r.number == self.current).map(|r| r.version.as_str()).unwrap_or("?")
    }
    fn next_revision(&self) -> u32 {
        self.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1
    }
}

/// The in-memory cluster.
#[derive(Default)]
pub struct Simulated {
    services: Mutex<HashMap<String, SimService>>,
}

const TAG: &str = "[simulated]";

impl Simulated {
    /// Starts every simulated service at the version and replicas its config gives.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a Service>) -> Simulated {
        let mut map = HashMap::new();
        for service in services {
            let Backend::Simulated { version, replicas, .. } = &service.backend else { continue };
            map.insert(
                service.name.clone(),
                SimService {
                    revisions: vec![Revision { number: 1, version: version.clone() }],
                    current: 1,
                    replicas: *replicas,
                    ready: *replicas,
                    restarts: 0,
                    last_failure: None,
                },
            );
        }
        Simulated { services: Mutex::new(map) }
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut SimService) -> T) -> Result<T, ActionError> {
        let mut services = self.services.lock().expect("simulated cluster lock");
        let service = services.get_mut(name).ok_or_else(|| ActionError::NotFound { service: name.to_string() })?;
        Ok(f(service))
    }

    /// The version the service currently runs (for tests).
    pub fn version_of(&self, name: &str) -> Option<String> {
        self.with(name, |s| s.version().to_string()).ok()
    }

    async fn roll(
        &self,
        service: &Service,
        to_version: String,
        verb: &str,
        progress: &Progress,
    ) -> Result<u32, ActionError> {
        let Backend::Simulated { step, crashing_versions, .. } = &service.backend else {
            return Err(ActionError::WrongBackend { service: service.name.clone() });
        };
        let name = &service.name;
        let (total, from_version, new_revision) =
            self.with(name, |s| (s.replicas, s.version().to_string(), s.next_revision()))?;
        progress.report(format!("{TAG} {verb} of {name}: rolling {total} replica(s) from {from_version} to {to_version} (revision {new_revision})")).await;
        let crashes = crashing_versions.contains(&to_version);
        for done in 1..=total.max(1) {
            tokio::time::sleep(*step).await;
            if crashes {
                let reason = format!("new pod on {to_version} is in CrashLoopBackOff (exit code 1, 3 restarts); {from_version} keeps serving");
                self.with(name, |s| s.last_failure = Some(reason.clone()))?;
                return Err(ActionError::Failed(format!("{TAG} rollout of {name} to {to_version} failed: {reason}")));
            }
            if total > 0 {
                progress.report(format!("{TAG} {name}: {done}/{total} replicas updated to {to_version}")).await;
            }
        }
        self.with(name, |s| {
            s.revisions.push(Revision { number: new_revision, version: to_version.clone() });
            s.current = new_revision;
            s.ready = s.replicas;
            s.last_failure = None;
        })?;
        Ok(new_revision)
    }
}

impl Executor for Simulated {
    fn label(&self) -> Option<&'static str> {
        Some(TAG)
    }

    fn execute<'a>(
        &'a self,
        service: &'a Service,
        action: &'a Action,
        _context: &'a RunContext,
        progress: Progress,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            let name = &service.name;
            match action {
                Action::Deploy { version } => {
                    let revision = self.roll(service, version.clone(), "deploy", &progress).await?;
                    Ok(Outcome::new(format!("{TAG} {name} now runs {version} (revision {revision})")))
                }
                Action::Rollback { revision } => {
                    let target = self.with(name, |s| match revision {
                        Some(n) => s.revisions.iter().find(|r| r.number == *n).cloned(),
                        None => {
                            s.revisions.iter().rev().find(|r| r.number < s.current && r.version != s.version()).cloned()
                        }
                    })?;
                    let Some(target) = target else {
                        let what =
                            revision.map(|n| format!("revision {n}")).unwrap_or_else(|| "earlier revision".into());
                        return Err(ActionError::Failed(format!("{TAG} {name} has no {what} to roll back to")));
                    };
                    let new = self.roll(service, target.version.clone(), "rollback", &progress).await?;
                    Ok(Outcome::new(format!(
                        "{TAG} {name} rolled back to {} (revision {} restored as {new})",
                        target.version, target.number
                    )))
                }
                Action::Restart => {
                    let Backend::Simulated { step, .. } = &service.backend else {
                        return Err(ActionError::WrongBackend { service: name.clone() });
                    };
                    let total = self.with(name, |s| s.replicas)?;
                    progress
                        .report(format!("{TAG} restart of {name}: replacing {total} replica(s) one at a time"))
                        .await;
                    for done in 1..=total {
                        tokio::time::sleep(*step).await;
                        progress.report(format!("{TAG} {name}: {done}/{total} replicas restarted")).await;
                    }
                    self.with(name, |s| s.restarts += 1)?;
                    Ok(Outcome::new(format!("{TAG} {name} restarted ({total} replicas)")))
                }
                Action::Scale { replicas } => {
                    let Backend::Simulated { step, .. } = &service.backend else {
                        return Err(ActionError::WrongBackend { service: name.clone() });
                    };
                    let from = self.with(name, |s| s.replicas)?;
                    progress.report(format!("{TAG} scaling {name} from {from} to {replicas} replicas")).await;
                    tokio::time::sleep(*step).await;
                    self.with(name, |s| {
                        s.replicas = *replicas;
                        s.ready = *replicas;
                    })?;
                    Ok(Outcome::new(format!("{TAG} {name} runs {replicas} replicas (was {from})")))
                }
            }
        })
    }

    fn healthy<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<(bool, String), ActionError>> {
        Box::pin(async move {
            self.with(&service.name, |s| {
                (
                    s.ready >= s.replicas && s.last_failure.is_none(),
                    format!("{TAG} {}/{} replicas ready", s.ready, s.replicas),
                )
            })
        })
    }

    fn status<'a>(&'a self, service: &'a Service) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            self.with(&service.name, |s| {
                let mut out = format!(
                    "{TAG} {} ({}): {} — revision {}, {}/{} replicas ready, {} restart(s)",
                    service.name,
                    service.environment,
                    s.version(),
                    s.current,
                    s.ready,
                    s.replicas,
                    s.restarts
                );
                if let Some(failure) = &s.last_failure {
                    out.push_str(&format!("\n  last rollout failed: {failure}"));
                }
                out.push_str("\n  revisions:");
                for r in s.revisions.iter().rev().take(5) {
                    let mark = if r.number == s.current { " (current)" } else { "" };
                    out.push_str(&format!(" {} {}{mark};", r.number, r.version));
                }
                out
            })
        })
    }
}
