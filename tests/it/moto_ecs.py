"""moto_server with ECS deployments made as ECS makes them.

Usage: python3 moto_ecs.py -H HOST -p PORT   (moto_server's own arguments)

moto 5's UpdateService starts no deployment: a new task definition only
changes the service's field, and forceNewDeployment renames the one
deployment that is there. A bot that followed "the PRIMARY deployment" would
then follow the old one and call it a success. ECS starts a new PRIMARY
deployment (a new id, the new task definition) and drains the old ones.
This patch does that, and nothing else:

- UpdateService with a new task definition, or with forceNewDeployment,
  starts a new PRIMARY deployment of the service's task definition. moto has
  no scheduler, so it settles at once: COMPLETED with the desired count
  running and the old deployments gone -- or, when an image's tag contains
  "crash", FAILED by the deployment circuit breaker (3 failed tasks; the
  seeded blue-green services have no rollback configured) while the old
  deployment, now ACTIVE, keeps its tasks.
- A desired-count change resizes the PRIMARY deployment; a FAILED one stays
  FAILED with nothing running.
- As ECS registers a service's tasks with its load balancer's target group,
  the target group holds one healthy target per running task of a
  COMPLETED deployment (a FAILED one leaves the old targets). Tasks of an
  image whose tag contains "unhealthy" run but never pass the health check:
  moto cannot mark a target unhealthy, so none is registered for them.

The ECS tests that need moto's plain behaviour start moto_server itself.
"""
import sys

from moto.core.utils import utcnow
from moto.ecs import models
from moto.elbv2.models import elbv2_backends
from moto.moto_api._internal import mock_random
from moto.server import main

original_update_service = models.EC2ContainerServiceBackend.update_service


registered = [0]


def sync_targets(backend, service):
    """One healthy target per running task of the PRIMARY deployment."""
    primary = service.deployments[0]
    if primary.get("rolloutState") == "FAILED":
        return
    definition = backend.describe_task_definition(service.task_definition)
    unhealthy = any("unhealthy" in c.get("image", "") for c in definition.container_definitions)
    healthy = 0 if unhealthy else service.running_count
    for lb in service.load_balancers:
        group = elbv2_backends[backend.account_id][backend.region_name].target_groups.get(lb.get("targetGroupArn"))
        if group is None:
            continue
        if group.targets:
            group.deregister([{"Id": target} for target in list(group.targets)])
        registered[0] += 1
        port = lb.get("containerPort", 8080)
        group.register([{"Id": f"10.{registered[0] % 250}.{i // 250}.{i % 250 + 1}", "Port": port} for i in range(healthy)])


def start_deployment(backend, service):
    definition = backend.describe_task_definition(service.task_definition)
    crashes = any("crash" in c.get("image", "") for c in definition.container_definitions)
    deployment_id = f"ecs-svc/{mock_random.randint(0, 32**12)}"
    now = utcnow()
    previous = service.deployments[0] if service.deployments else {}
    deployment = dict(previous, id=deployment_id, status="PRIMARY", taskDefinition=service.task_definition,
                      desiredCount=service.desired_count, pendingCount=0, createdAt=now, updatedAt=now)
    if crashes:
        deployment.update(rolloutState="FAILED", runningCount=0, failedTasks=3,
                          rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.")
        old = [dict(d, status="ACTIVE") for d in service.deployments[:1]]
        service.deployments = [deployment] + old
        service.running_count = sum(d.get("runningCount", 0) for d in old)
    else:
        deployment.update(rolloutState="COMPLETED", runningCount=service.desired_count, failedTasks=0,
                          rolloutStateReason=f"ECS deployment {deployment_id} completed.")
        service.deployments = [deployment]
        service.running_count = service.desired_count
    service.pending_count = 0


def resize(service):
    primary = service.deployments[0]
    primary["desiredCount"] = service.desired_count
    if primary.get("rolloutState") == "FAILED":
        service.running_count = sum(d.get("runningCount", 0) for d in service.deployments)
    else:
        primary["runningCount"] = service.desired_count
        service.running_count = service.desired_count
    service.pending_count = 0


def update_service(self, properties):
    cluster = properties.get("cluster", "default")
    before = self._get_service(cluster, properties["service"].split("/")[-1])
    definition, desired = before.task_definition, before.desired_count
    force = properties.get("force_new_deployment", False)
    service = original_update_service(self, dict(properties, force_new_deployment=False))
    if service.deployments and (service.task_definition != definition or force):
        start_deployment(self, service)
        sync_targets(self, service)
    elif service.deployments and service.desired_count != desired:
        resize(service)
        sync_targets(self, service)
    return service


models.EC2ContainerServiceBackend.update_service = update_service

if __name__ == "__main__":
    main(sys.argv[1:])
