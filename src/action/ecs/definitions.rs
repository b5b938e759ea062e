//! Task definitions: the configured container's image, the containers a
//! definition has, deregistered (INACTIVE) revisions, and registering a copy
//! with only one image changed — its tags carried over.

use super::call::write_once;
use super::Ctx;
use crate::action::ActionError;
use aws_sdk_ecs::types::{ContainerDefinition, Tag, TaskDefinition, TaskDefinitionField, TaskDefinitionStatus};

pub(super) fn image_of<'a>(definition: &'a TaskDefinition, container: &str) -> Option<&'a str> {
    definition
        .container_definitions
        .iter()
        .flatten()
        .find(|c| c.name.as_deref() == Some(container))
        .and_then(|c| c.image.as_deref())
}

pub(super) fn container_names(definition: &TaskDefinition) -> String {
    let names: Vec<&str> =
        definition.container_definitions.iter().flatten().filter_map(|c| c.name.as_deref()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// `api:7`.
pub(super) fn family_revision(definition: &TaskDefinition) -> String {
    format!("{}:{}", definition.family.as_deref().unwrap_or("?"), definition.revision)
}

/// `api:7` from an ARN.
pub(super) fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The same container definitions with only `container`'s image changed.
fn with_image(definitions: &[ContainerDefinition], container: &str, image: &str) -> Vec<ContainerDefinition> {
    definitions
        .iter()
        .cloned()
        .map(|mut c| {
            if c.name.as_deref() == Some(container) {
                c.image = Some(image.to_string());
            }
            c
        })
        .collect()
}

/// A task definition and its tags.
#[derive(Clone)]
pub(super) struct Definition {
    pub(super) definition: TaskDefinition,
    pub(super) tags: Vec<Tag>,
}

impl Definition {
    pub(super) fn arn(&self) -> String {
        self.definition.task_definition_arn.clone().unwrap_or_default()
    }
    pub(super) fn name(&self) -> String {
        family_revision(&self.definition)
    }
    pub(super) fn is_inactive(&self) -> bool {
        self.definition.status == Some(TaskDefinitionStatus::Inactive)
    }
}

impl Ctx<'_> {
    /// A task definition (by ARN or `family:revision`) with its tags.
    pub(super) async fn definition(&self, reference: &str) -> Result<Definition, ActionError> {
        let out = self
            .ask(
                "ecs:DescribeTaskDefinition",
                self.ecs
                    .describe_task_definition()
                    .task_definition(reference)
                    .include(TaskDefinitionField::Tags)
                    .send(),
            )
            .await?;
        let definition =
            out.task_definition.ok_or_else(|| ActionError::Failed(format!("task definition {reference} not found")))?;
        Ok(Definition { definition, tags: out.tags.unwrap_or_default() })
    }

    /// Refuses a definition without the configured container: changing
    /// "its" image would change nothing while claiming a deploy.
    pub(super) fn check_container(&self, definition: &TaskDefinition) -> Result<(), ActionError> {
        if image_of(definition, self.t.container).is_some() {
            return Ok(());
        }
        Err(ActionError::Failed(format!(
            "task definition {} has no container `{}`; its containers: {}; fix `container` in the service's config",
            family_revision(definition),
            self.t.container,
            container_names(definition)
        )))
    }

    /// Refuses a deregistered revision before anything changes.
    pub(super) fn check_active(&self, definition: &Definition) -> Result<(), ActionError> {
        if definition.is_inactive() {
            return Err(ActionError::Failed(format!(
                "task definition {} is deregistered (INACTIVE): ECS starts no new tasks from it; name an active revision",
                definition.name()
            )));
        }
        Ok(())
    }

    /// The task definition running `image` for the container: the current
    /// one if it already does, a recent active revision of the family that
    /// does (left by an earlier attempt), or a new registration copying the
    /// current one, tags included. Returns it, and whether it was registered
    /// now.
    ///
    /// The registration is sent once (no SDK re-sends, which would register
    /// duplicates); when its answer is lost, the family's newest revisions
    /// say whether it was registered.
    pub(super) async fn definition_for(
        &self,
        current: &Definition,
        image: &str,
    ) -> Result<(Definition, bool), ActionError> {
        let def = &current.definition;
        if image_of(def, self.t.container) == Some(image) {
            return Ok((current.clone(), false));
        }
        let wanted = with_image(def.container_definitions.as_deref().unwrap_or_default(), self.t.container, image);
        if let Some(found) = self.recent_with(def, &wanted).await? {
            return Ok((found, false));
        }
        let request = self.registration(current, wanted.clone()).customize().config_override(write_once());
        match self.call("ecs:RegisterTaskDefinition", request.send()).await {
            Ok(registered) => {
                let definition = registered
                    .task_definition
                    .ok_or_else(|| ActionError::Failed("RegisterTaskDefinition returned nothing".into()))?;
                Ok((Definition { definition, tags: registered.tags.unwrap_or_default() }, true))
            }
            Err(e) if e.failure.may_have_landed() => match self.recent_with(def, &wanted).await? {
                Some(found) => Ok((found, true)),
                None => Err(ActionError::Failed(format!(
                    "{}; re-read: the family has no revision with {image}, so nothing was registered or changed",
                    e.explain(self)
                ))),
            },
            Err(e) => Err(e.into_action(self)),
        }
    }

    /// The five newest task definitions of `family`, newest first.
    pub(super) fn recent_definitions(
        &self,
        family: &str,
    ) -> aws_sdk_ecs::operation::list_task_definitions::builders::ListTaskDefinitionsFluentBuilder {
        self.ecs.list_task_definitions().family_prefix(family).sort(aws_sdk_ecs::types::SortOrder::Desc).max_results(5)
    }

    /// A recent active revision of `def`'s family with exactly `wanted`.
    async fn recent_with(
        &self,
        def: &TaskDefinition,
        wanted: &[ContainerDefinition],
    ) -> Result<Option<Definition>, ActionError> {
        let family = def.family.clone().unwrap_or_default();
        let recent = self.ask("ecs:ListTaskDefinitions", self.recent_definitions(&family).send()).await?;
        for arn in recent.task_definition_arns.unwrap_or_default() {
            let candidate = self.definition(&arn).await?;
            if candidate.definition.family == def.family
                && !candidate.is_inactive()
                && candidate.definition.container_definitions.as_deref() == Some(wanted)
            {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// A registration copying `current` with `containers`, tags included.
    fn registration(
        &self,
        current: &Definition,
        containers: Vec<ContainerDefinition>,
    ) -> aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder {
        let def = &current.definition;
        self.ecs
            .register_task_definition()
            .set_family(def.family.clone())
            .set_container_definitions(Some(containers))
            .set_task_role_arn(def.task_role_arn.clone())
            .set_execution_role_arn(def.execution_role_arn.clone())
            .set_network_mode(def.network_mode.clone())
            .set_volumes(def.volumes.clone())
            .set_placement_constraints(def.placement_constraints.clone())
            .set_requires_compatibilities(def.requires_compatibilities.clone())
            .set_cpu(def.cpu.clone())
            .set_memory(def.memory.clone())
            .set_pid_mode(def.pid_mode.clone())
            .set_ipc_mode(def.ipc_mode.clone())
            .set_proxy_configuration(def.proxy_configuration.clone())
            .set_ephemeral_storage(def.ephemeral_storage.clone())
            .set_runtime_platform(def.runtime_platform.clone())
            .set_tags(Some(current.tags.clone()).filter(|tags| !tags.is_empty()))
    }
}
