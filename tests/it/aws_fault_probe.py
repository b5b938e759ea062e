"""Proves that the fault proxy (aws_proxy.rs) answers AWS errors as AWS does:
boto3 must read the injected error's code and message, and calls without a
fault must pass through to moto unchanged. The Rust test injects a fault on
the first elbv2 ModifyListener and the first ecs DescribeClusters.
Prints JSON. Usage: python3 aws_fault_probe.py PROXY LISTENER_ARN"""
import json, sys
import boto3
from botocore.exceptions import ClientError

kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
elb, ecs = boto3.client("elbv2", **kw), boto3.client("ecs", **kw)
out = {}
for name, call in [("elb", lambda: elb.modify_listener(ListenerArn=sys.argv[2], DefaultActions=[])),
                   ("ecs", lambda: ecs.describe_clusters(clusters=["prod"]))]:
    try:
        call()
        out[name] = None
    except ClientError as e:
        out[name] = [e.response["Error"]["Code"], e.response["Error"]["Message"], e.response["ResponseMetadata"]["HTTPStatusCode"]]
out["passes"] = elb.describe_listeners(ListenerArns=[sys.argv[2]])["Listeners"][0]["ListenerArn"] == sys.argv[2]
out["clusters"] = [c["clusterName"] for c in ecs.describe_clusters(clusters=["prod"])["clusters"]]
print(json.dumps(out))
