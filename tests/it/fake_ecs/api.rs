//! The ECS operations the fake answers, in ECS's JSON shapes.

use super::{td_arn, Deployment, World, ARN};
use serde_json::{json, Value};

pub(super) type Answer = Result<Value, (String, String)>;

impl World {
    pub(super) fn handle(&mut self, action: &str, r: &Value) -> Answer {
        let cluster = r["cluster"].as_str().unwrap_or("default");
        if r.get("cluster").is_some() && cluster != "prod" && !cluster.ends_with("cluster/prod") {
            return Err(("ClusterNotFoundException".into(), "Cluster not found.".into()));
        }
        match action {
            "DescribeServices" => Ok(self.describe_services(r)),
            "UpdateService" => self.update(r),
            "DescribeTaskDefinition" => self.describe_task_definition(r),
            "RegisterTaskDefinition" => Ok(self.register(r)),
            "ListTaskDefinitions" => {
                let mut arns: Vec<Value> = self.definitions.iter().map(|d| d["taskDefinitionArn"].clone()).collect();
                if r["sort"] == "DESC" {
                    arns.reverse();
                }
                arns.truncate(r["maxResults"].as_u64().unwrap_or(100) as usize);
                Ok(json!({"taskDefinitionArns": arns}))
            }
            "ListTasks" => {
                let arns: Vec<Value> = if r["desiredStatus"] == "STOPPED" {
                    self.stopped.iter().map(|t| t["taskArn"].clone()).collect()
                } else {
                    vec![]
                };
                Ok(json!({"taskArns": arns}))
            }
            "DescribeTasks" => {
                let wanted: Vec<&Value> = r["tasks"].as_array().into_iter().flatten().collect();
                let tasks: Vec<Value> =
                    self.stopped.iter().filter(|t| wanted.contains(&&t["taskArn"])).cloned().collect();
                Ok(json!({"tasks": tasks, "failures": []}))
            }
            "ListClusters" => Ok(json!({"clusterArns": [format!("{ARN}:cluster/prod")]})),
            other => Err(("InvalidAction".into(), format!("the fake does not do {other}"))),
        }
    }

    /// Each look at `api` moves its rollout one step.
    fn describe_services(&mut self, r: &Value) -> Value {
        let names: Vec<&str> = r["services"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if names.contains(&"api") {
            self.advance();
        }
        let services: Vec<Value> = names.iter().filter(|n| **n == "api").map(|_| self.service()).collect();
        let failures: Vec<Value> = names
            .iter()
            .filter(|n| **n != "api")
            .map(|n| json!({"arn": format!("{ARN}:service/prod/{n}"), "reason": "MISSING"}))
            .collect();
        json!({"services": services, "failures": failures})
    }

    fn describe_task_definition(&self, r: &Value) -> Answer {
        let wanted = r["taskDefinition"].as_str().unwrap_or("");
        let name = wanted.rsplit('/').next().unwrap_or(wanted);
        let found = self.definitions.iter().rev().find(|d| {
            let short = d["taskDefinitionArn"].as_str().unwrap().rsplit('/').next().unwrap();
            short == name || d["family"] == name
        });
        let Some(definition) = found.cloned() else {
            return Err(("ClientException".into(), "Unable to describe task definition.".into()));
        };
        let mut out = json!({"taskDefinition": definition});
        if r["include"].as_array().is_some_and(|i| i.iter().any(|x| x == "TAGS")) {
            let arn = definition["taskDefinitionArn"].as_str().unwrap();
            out["tags"] = self.tags.iter().find(|(a, _)| a == arn).map(|(_, t)| t.clone()).unwrap_or(json!([]));
        }
        Ok(out)
    }

    fn register(&mut self, r: &Value) -> Value {
        let family = r["family"].as_str().unwrap_or("api").to_string();
        let revision = self.definitions.iter().filter(|d| d["family"] == family.as_str()).count() as u64 + 7;
        let mut definition = r.clone();
        definition.as_object_mut().unwrap().remove("tags");
        definition["taskDefinitionArn"] = json!(td_arn(&family, revision));
        definition["revision"] = json!(revision);
        definition["status"] = json!("ACTIVE");
        if let Some(tags) = r.get("tags") {
            self.tags.push((td_arn(&family, revision), tags.clone()));
        }
        self.definitions.push(definition.clone());
        json!({"taskDefinition": definition, "tags": r.get("tags").cloned().unwrap_or(json!([]))})
    }

    fn service(&self) -> Value {
        let running: i64 = self.deployments.iter().map(|d| d.running).sum();
        json!({"serviceArn": format!("{ARN}:service/prod/api"), "serviceName": "api", "clusterArn": format!("{ARN}:cluster/prod"),
            "status": "ACTIVE", "desiredCount": self.desired, "runningCount": running, "pendingCount": (self.desired - running).max(0),
            "launchType": "FARGATE", "taskDefinition": self.task_definition,
            "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": self.breaker, "rollback": self.breaker}, "maximumPercent": 200, "minimumHealthyPercent": 100},
            "deployments": self.deployments.iter().map(Deployment::json).collect::<Vec<_>>(),
            "events": self.events.iter().enumerate().map(|(i, m)| json!({"id": format!("event-{i}"), "createdAt": 1.7e9, "message": m})).collect::<Vec<_>>()})
    }

    fn update(&mut self, r: &Value) -> Answer {
        if r["service"] != "api" {
            return Err(("ServiceNotFoundException".into(), "Service not found.".into()));
        }
        let new_definition = r["taskDefinition"].as_str().map(|t| {
            let name = t.rsplit('/').next().unwrap();
            self.definitions
                .iter()
                .find(|d| d["taskDefinitionArn"].as_str().unwrap().ends_with(&format!("/{name}")))
                .map(|d| d["taskDefinitionArn"].as_str().unwrap().to_string())
        });
        let inactive =
            |arn: &str| self.definitions.iter().any(|d| d["taskDefinitionArn"] == arn && d["status"] == "INACTIVE");
        let new_definition = match new_definition {
            Some(None) => return Err(("ClientException".into(), "TaskDefinition not found.".into())),
            Some(Some(arn)) if inactive(&arn) => {
                return Err(("ClientException".into(), "TaskDefinition is inactive".into()))
            }
            Some(Some(arn)) if arn != self.task_definition => Some(arn),
            _ => None,
        };
        // Checked, then applied: a refused update changes nothing.
        if let Some(n) = r["desiredCount"].as_i64() {
            self.desired = n;
            if let Some(p) = self.deployments.iter_mut().find(|d| d.status == "PRIMARY") {
                p.desired = n;
            }
        }
        if new_definition.is_some() || r["forceNewDeployment"] == true {
            for d in &mut self.deployments {
                d.status = "ACTIVE";
            }
            let id = format!("ecs-svc/{}", self.next);
            self.next += 1;
            let td = new_definition.unwrap_or_else(|| self.task_definition.clone());
            self.task_definition = td.clone();
            self.deployments.insert(
                0,
                Deployment {
                    id: id.clone(),
                    status: "PRIMARY",
                    task_definition: td,
                    desired: self.desired,
                    running: 0,
                    failed: 0,
                    state: "IN_PROGRESS",
                    reason: format!("ECS deployment {id} in progress."),
                    rollback: false,
                    looks: 0,
                },
            );
        }
        Ok(json!({"service": self.service()}))
    }
}
