"""Changes moto's state the way another writer would, for the ECS tests.
Usage: python3 ecs_poke.py ENDPOINT split LISTENER_ARN TG_A WEIGHT_A TG_B WEIGHT_B
       python3 ecs_poke.py ENDPOINT desired SERVICE COUNT
       python3 ecs_poke.py ENDPOINT deregister FAMILY:REVISION
       python3 ecs_poke.py ENDPOINT tag TARGET_GROUP_ARN KEY VALUE
       python3 ecs_poke.py ENDPOINT tag-service SERVICE KEY
       python3 ecs_poke.py ENDPOINT rule LISTENER_ARN PRIORITY PATH TARGET_GROUP_ARN
       python3 ecs_poke.py ENDPOINT sticky LISTENER_ARN TARGET_GROUP_ARN
Prints {} on success."""
import json, sys
import boto3

kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
command, args = sys.argv[2], sys.argv[3:]
if command == "split":
    listener, a, wa, b, wb = args
    boto3.client("elbv2", **kw).modify_listener(ListenerArn=listener, DefaultActions=[{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": a, "Weight": int(wa)}, {"TargetGroupArn": b, "Weight": int(wb)}]}}])
elif command == "desired":
    boto3.client("ecs", **kw).update_service(cluster="prod", service=args[0], desiredCount=int(args[1]))
elif command == "deregister":
    boto3.client("ecs", **kw).deregister_task_definition(taskDefinition=args[0])
elif command == "tag":
    arn, key, value = args
    boto3.client("elbv2", **kw).add_tags(ResourceArns=[arn], Tags=[{"Key": key, "Value": value}])
elif command == "tag-service":
    ecs = boto3.client("ecs", **kw)
    service, key = args
    arn = ecs.describe_services(cluster="prod", services=[service])["services"][0]["serviceArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": key, "value": "late"}])
elif command == "rule":
    listener, priority, path, tg = args
    boto3.client("elbv2", **kw).create_rule(ListenerArn=listener, Priority=int(priority),
                                            Conditions=[{"Field": "path-pattern", "Values": [path]}],
                                            Actions=[{"Type": "forward", "TargetGroupArn": tg}])
elif command == "sticky":
    listener, tg = args
    boto3.client("elbv2", **kw).modify_listener(ListenerArn=listener, DefaultActions=[{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": tg, "Weight": 1}],
        "TargetGroupStickinessConfig": {"Enabled": True, "DurationSeconds": 300}}}])
else:
    sys.exit(f"unknown command {command}")
print("{}")
