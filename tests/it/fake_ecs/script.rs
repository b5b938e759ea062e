//! The rollout script: what a look at the service finds, by [`Behaviour`].

use super::{Behaviour, Deployment, World, ARN};
use serde_json::json;

impl World {
    /// One step of the rollout, as a look at the service sees it.
    pub(super) fn advance(&mut self) {
        let Some(i) = self.deployments.iter().position(|d| d.status == "PRIMARY") else { return };
        // The script is for the first deployment an update creates; the
        // circuit breaker's rollback and any later deployment complete.
        let scripted = !self.deployments[i].rollback && self.deployments[i].id == "ecs-svc/1001";
        let behaviour = if scripted { self.behaviour } else { Behaviour::Completes };
        let p = &mut self.deployments[i];
        p.looks += 1;
        let due = p.state == "IN_PROGRESS" && p.looks >= 2;
        match behaviour {
            Behaviour::Hangs => {}
            _ if p.state == "COMPLETED" => {
                // A count change: one task up or down per look.
                p.running += (p.desired - p.running).signum();
            }
            Behaviour::Completes => self.progress(i),
            Behaviour::ReplacedQuickly if due => {
                let (desired, td) = (p.desired, p.task_definition.clone());
                let id = format!("ecs-svc/{}", self.next);
                self.next += 1;
                self.deployments = vec![Deployment {
                    reason: format!("ECS deployment {id} completed."),
                    id,
                    status: "PRIMARY",
                    task_definition: td,
                    desired,
                    running: desired,
                    failed: 0,
                    state: "COMPLETED",
                    rollback: false,
                    looks: 0,
                }];
                self.events.insert(0, "(service api) has reached a steady state.".into());
            }
            Behaviour::Superseded if due => {
                let (desired, td) = (p.desired, p.task_definition.clone());
                p.status = "ACTIVE";
                let id = format!("ecs-svc/{}", self.next);
                self.next += 1;
                let reason = format!("ECS deployment {id} in progress.");
                let other = Deployment {
                    id,
                    status: "PRIMARY",
                    task_definition: td,
                    desired,
                    running: 0,
                    failed: 0,
                    state: "IN_PROGRESS",
                    reason,
                    rollback: false,
                    looks: 0,
                };
                self.deployments.insert(0, other);
            }
            Behaviour::Stalls if due && p.failed == 0 => {
                p.failed = 3;
                let (id, td) = (p.id.clone(), p.task_definition.clone());
                self.stop_tasks(&id, &td);
            }
            Behaviour::CircuitBreaker | Behaviour::CircuitBreakerQuick | Behaviour::Fails if due => {
                self.fail(i, behaviour != Behaviour::Fails);
                if behaviour == Behaviour::CircuitBreakerQuick {
                    while self.deployments.iter().any(|d| d.status == "PRIMARY" && d.state == "IN_PROGRESS") {
                        let rollback = self.deployments.iter().position(|d| d.status == "PRIMARY").unwrap();
                        self.deployments[rollback].looks += 1;
                        self.progress(rollback);
                    }
                }
            }
            _ => {}
        }
    }

    /// A completing deployment: one more task per look, then COMPLETED and
    /// the others drained.
    fn progress(&mut self, i: usize) {
        let p = &mut self.deployments[i];
        // The first look finds the deployment just created.
        if p.looks > 1 {
            p.running = (p.running + 1).min(p.desired);
        }
        if p.running == p.desired {
            p.state = "COMPLETED";
            p.reason = format!("ECS deployment {} completed.", p.id);
            self.deployments.retain(|d| d.status == "PRIMARY");
            self.events.insert(0, "(service api) has reached a steady state.".into());
        }
    }

    /// Three tasks of deployment `id` stopped, with their reasons.
    fn stop_tasks(&mut self, id: &str, td: &str) {
        for n in 0..3 {
            self.stopped.push(json!({"taskArn": format!("{ARN}:task/prod/{:x}{n}", 0xabc0 + self.next), "clusterArn": format!("{ARN}:cluster/prod"),
                "taskDefinitionArn": td, "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "startedBy": id,
                "stopCode": "EssentialContainerExited", "stoppedReason": "Essential container in task exited",
                "containers": [{"name": "app", "lastStatus": "STOPPED", "exitCode": 1, "reason": "CannotPullContainerError: pull image manifest has been retried 5 time(s)"}]}));
        }
    }

    /// The circuit breaker fails deployment `i`; with `rollback`, it starts
    /// a new deployment of the last completed task definition (whose tasks
    /// it takes over), as ECS does.
    fn fail(&mut self, i: usize, rollback: bool) {
        let id = self.deployments[i].id.clone();
        let td = self.deployments[i].task_definition.clone();
        {
            let d = &mut self.deployments[i];
            d.state = "FAILED";
            d.failed = 3;
            d.running = 0;
            d.reason = "ECS deployment circuit breaker: tasks failed to start.".into();
        }
        self.stop_tasks(&id, &td);
        self.events.insert(0, format!("(service api) (deployment {id}) deployment failed: tasks failed to start."));
        let previous = self.deployments.iter().position(|d| d.status == "ACTIVE" && d.state == "COMPLETED");
        let (true, Some(j)) = (rollback, previous) else { return };
        let back = self.deployments.remove(j);
        self.deployments[i].status = "ACTIVE";
        let new_id = format!("ecs-svc/{}", self.next);
        self.next += 1;
        self.task_definition = back.task_definition.clone();
        self.events.insert(0, format!("(service api) rolling back to deployment {}.", back.id));
        self.deployments.insert(
            0,
            Deployment {
                id: new_id,
                status: "PRIMARY",
                task_definition: back.task_definition,
                desired: back.desired,
                running: (back.desired - 1).max(0),
                failed: 0,
                state: "IN_PROGRESS",
                reason: format!("ECS deployment circuit breaker: rolling back to deploymentId {}.", back.id),
                rollback: true,
                looks: 0,
            },
        );
    }
}
