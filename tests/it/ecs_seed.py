"""Seeds moto with what the ECS tests need and prints the ARNs as JSON.
Usage: python3 ecs_seed.py ENDPOINT"""
import json, sys
import boto3

endpoint = sys.argv[1]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
ecs = boto3.client("ecs", **kw)
ec2 = boto3.client("ec2", **kw)
elb = boto3.client("elbv2", **kw)

ecs.create_cluster(clusterName="prod")

def task(family, image):
    return ecs.register_task_definition(
        family=family,
        networkMode="bridge",
        tags=[{"key": "team", "value": "payments"}, {"key": "cost-centre", "value": "42"}],
        containerDefinitions=[
            {"name": "app", "image": image, "memory": 256, "portMappings": [{"containerPort": 8080}], "environment": [{"name": "MODE", "value": "prod"}]},
            {"name": "sidecar", "image": "repo/envoy:1.30", "memory": 64},
        ],
    )["taskDefinition"]["taskDefinitionArn"]

api_td = task("api", "repo/api:v1.0.0")
ecs.create_service(cluster="prod", serviceName="api", taskDefinition=api_td, desiredCount=2,
                   deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})

vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
lb = elb.create_load_balancer(Name="web", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
groups = {}
for colour in ("blue", "green"):
    tg = elb.create_target_group(Name=f"web-{colour}", Protocol="HTTP", Port=8080, VpcId=vpc,
                                 Tags=[{"Key": "Color", "Value": colour}])["TargetGroups"][0]["TargetGroupArn"]
    groups[colour] = tg
    # ECS registers each running task with the target group: two, healthy.
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": f"10.9.{len(groups)}.{i}", "Port": 8080} for i in (1, 2)])
    td = task(f"web-{colour}", "repo/web:v1.0.0")
    # The circuit breaker fails a deployment whose tasks do not start; no rollback: opsbot's switch decides.
    ecs.create_service(cluster="prod", serviceName=f"web-{colour}", taskDefinition=td, desiredCount=2,
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "app", "containerPort": 8080}],
                       deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": False}})
listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                               DefaultActions=[{"Type": "forward", "TargetGroupArn": groups["blue"]}])["Listeners"][0]["ListenerArn"]
print(json.dumps({"listener": listener, "blue": groups["blue"], "green": groups["green"]}))
