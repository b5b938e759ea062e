//! The scripted ECS API and the fault proxy, proven with boto3.

use super::{python, Moto};
use crate::aws_proxy::AwsProxy;
use crate::fake_ecs::{Behaviour, FakeEcs};
use serde_json::json;

#[test]
fn the_scripted_ecs_api_answers_as_ecs_does_by_botocores_model() {
    let fake = FakeEcs::start(Behaviour::CircuitBreaker);
    let report = python("ecs_wire.py", &fake.url, &[]);
    assert_eq!(report["problems"], json!([]), "{report}");
    let checked: Vec<&str> = report["checked"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for operation in [
        "DescribeServices",
        "DescribeTaskDefinition",
        "RegisterTaskDefinition",
        "UpdateService",
        "ListTasks",
        "DescribeTasks",
        "ListTaskDefinitions",
        "ListClusters",
    ] {
        assert!(checked.contains(&operation), "{operation} checked: {report}");
    }
    let seen = &report["seen"];
    assert_eq!(seen["tags"], json!([{"key": "team", "value": "payments"}]));
    let states: Vec<&str> = seen["states"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(states[0], "IN_PROGRESS");
    assert!(states.contains(&"FAILED"), "the circuit breaker failed it: {states:?}");
    assert_eq!(seen["final"], "api:7", "and rolled the service back");
    assert_eq!(seen["stopped"][0], "Essential container in task exited");
    assert_eq!(seen["error"], "ClusterNotFoundException");
}

#[test]
fn the_fault_proxy_answers_aws_errors_as_boto3_reads_them() {
    let moto = Moto::start();
    let arns = python("ecs_seed.py", &moto.url, &[]);
    let proxy = AwsProxy::start(&moto.url);
    proxy.fail_nth("ModifyListener", 1, 400, "ValidationError", "the fault proxy said no");
    proxy.fail_nth("DescribeClusters", 1, 400, "ClientException", "the fault proxy refused");
    let listener = arns["listener"].as_str().unwrap();
    let report = python("aws_fault_probe.py", &proxy.url, &[listener]);
    assert_eq!(report["elb"], json!(["ValidationError", "the fault proxy said no", 400]), "{report}");
    assert_eq!(report["ecs"], json!(["ClientException", "the fault proxy refused", 400]), "{report}");
    // Calls without a fault pass through to moto unchanged.
    assert_eq!(report["passes"], true);
    assert_eq!(report["clusters"], json!(["prod"]));
}
