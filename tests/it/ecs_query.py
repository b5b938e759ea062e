"""Reads state back from moto for the ECS tests; prints JSON.
Usage: python3 ecs_query.py ENDPOINT LISTENER_ARN"""
import json, sys
import boto3

kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
ecs = boto3.client("ecs", **kw)
elb = boto3.client("elbv2", **kw)
out = {"services": {}, "definitions": {}, "tags": {}}
for name in ("api", "web-blue", "web-green"):
    s = ecs.describe_services(cluster="prod", services=[name], include=["TAGS"])["services"][0]
    out["services"][name] = {"taskDefinition": s["taskDefinition"], "desiredCount": s["desiredCount"],
                             "tags": {t["key"]: t["value"] for t in s.get("tags", [])},
                             "deploymentIds": [d["id"] for d in s["deployments"]],
                             "deployments": [{"id": d["id"], "status": d["status"], "rolloutState": d.get("rolloutState"),
                                              "taskDefinition": d["taskDefinition"].rsplit("/", 1)[-1]}
                                             for d in s["deployments"]]}
for family in ("api", "web-blue", "web-green"):
    arns = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    described = [ecs.describe_task_definition(taskDefinition=a, include=["TAGS"]) for a in arns]
    out["definitions"][family] = [d["taskDefinition"]["containerDefinitions"] for d in described]
    out["tags"][family] = [sorted((t["key"], t["value"]) for t in d.get("tags", [])) for d in described]
action = elb.describe_listeners(ListenerArns=[sys.argv[2]])["Listeners"][0]["DefaultActions"][0]
out["listener"] = action
print(json.dumps(out, default=str))
