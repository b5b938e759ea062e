"""Proves that the scripted ECS API (fake_ecs.rs) speaks ECS's wire format.
Drives it with boto3 through a deploy that the circuit breaker rolls back, and
checks every raw answer against botocore's model of ECS: no member ECS does
not have, required members present, every value of the model's type and in
its enum. Prints JSON: {"checked": [operations], "problems": [...], "seen": {...}}.
Usage: python3 ecs_wire.py ENDPOINT"""
import json, sys
import boto3
from botocore.exceptions import ClientError

problems, checked = [], []


def check(shape, value, path):
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return problems.append(f"{path}: expected an object, got {type(value).__name__}")
        for key, item in value.items():
            if key not in shape.members:
                problems.append(f"{path}.{key}: not a member of {shape.name}")
            else:
                check(shape.members[key], item, f"{path}.{key}")
        for key in shape.required_members:
            if key not in value:
                problems.append(f"{path}: required member {key} missing")
    elif kind == "list":
        if not isinstance(value, list):
            return problems.append(f"{path}: expected a list")
        for i, item in enumerate(value):
            check(shape.member, item, f"{path}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            return problems.append(f"{path}: expected a map")
        for key, item in value.items():
            check(shape.value, item, f"{path}[{key}]")
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string")
        elif shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.name}'s values")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: expected an integer")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean")
    elif kind in ("float", "double", "timestamp"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{path}: expected a number")


def on_parse(operation_model, response_dict, **_):
    if response_dict["status_code"] >= 300:
        return
    body = response_dict["body"]
    check(operation_model.output_shape, json.loads(body) if body else {}, operation_model.name)
    checked.append(operation_model.name)


ecs = boto3.client("ecs", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
ecs.meta.events.register("before-parse.ecs.*", on_parse)

seen = {"states": []}
ecs.describe_services(cluster="prod", services=["api"])
current = ecs.describe_task_definition(taskDefinition="api:7", include=["TAGS"])
seen["tags"] = current["tags"]
registered = ecs.register_task_definition(
    family="api", containerDefinitions=[dict(current["taskDefinition"]["containerDefinitions"][0], image="repo/api:v8")],
    tags=current["tags"])["taskDefinition"]["taskDefinitionArn"]
created = ecs.update_service(cluster="prod", service="api", taskDefinition=registered)["service"]
ours = next(d["id"] for d in created["deployments"] if d["status"] == "PRIMARY")
for _ in range(8):
    service = ecs.describe_services(cluster="prod", services=["api"])["services"][0]
    mine = [d for d in service["deployments"] if d["id"] == ours]
    seen["states"].append(mine[0]["rolloutState"] if mine else "gone")
seen["final"] = service["taskDefinition"].rsplit("/", 1)[1]
stopped = ecs.list_tasks(cluster="prod", serviceName="api", desiredStatus="STOPPED")["taskArns"]
seen["stopped"] = [t["stoppedReason"] for t in ecs.describe_tasks(cluster="prod", tasks=stopped)["tasks"]]
ecs.list_task_definitions(familyPrefix="api", sort="DESC", maxResults=5)
ecs.list_clusters()
ecs.update_service(cluster="prod", service="api", desiredCount=3)
try:
    ecs.describe_services(cluster="nope", services=["api"])
    problems.append("an unknown cluster was not an error")
except ClientError as e:
    seen["error"] = e.response["Error"]["Code"]
print(json.dumps({"checked": sorted(set(checked)), "problems": problems, "seen": seen}))
