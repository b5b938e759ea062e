"""Reads state back from moto for the ECS tests; prints JSON.
Usage: python3 ecs_query.py ENDPOINT LISTENER_ARN"""
import json, sys
import boto3

kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
ecs = boto3.client("ecs", **kw)
elb = boto3.client("elbv2", **kw)
out = {"services": {}, "definitions": {}}
for name in ("api", "web-blue", "web-green"):
    s = ecs.describe_services(cluster="prod", services=[name])["services"][0]
    out["services"][name] = {"taskDefinition": s["taskDefinition"], "desiredCount": s["desiredCount"],
                             "deploymentIds": [d["id"] for d in s["deployments"]]}
for family in ("api", "web-blue", "web-green"):
    arns = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    out["definitions"][family] = [ecs.describe_task_definition(taskDefinition=a)["taskDefinition"]["containerDefinitions"] for a in arns]
action = elb.describe_listeners(ListenerArns=[sys.argv[2]])["Listeners"][0]["DefaultActions"][0]
out["listener"] = action
print(json.dumps(out, default=str))
