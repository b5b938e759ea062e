//! Where a blue-green pair stands: each colour's service, task definition and
//! share of the listener's traffic (a weighted forward can split it), and the
//! facts recorded in the audit trail after a verified switch.

use super::super::definitions::{image_of, short, Definition};
use super::super::Ctx;
use crate::action::ActionError;
use crate::config::BlueGreen;
use aws_sdk_ecs::types::Service;
use aws_sdk_elasticloadbalancingv2::types::TargetGroupStickinessConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One colour now.
pub(in crate::action::ecs) struct ColourNow {
    /// From its target group's `Color` tag.
    pub(in crate::action::ecs) name: String,
    pub(in crate::action::ecs) service: String,
    pub(in crate::action::ecs) target_group: String,
    pub(in crate::action::ecs) url: String,
    pub(in crate::action::ecs) live: Service,
    pub(in crate::action::ecs) definition: Definition,
    /// Percent of the listener's traffic.
    pub(in crate::action::ecs) weight: i32,
}

impl ColourNow {
    pub(in crate::action::ecs) fn image<'a>(&'a self, container: &str) -> &'a str {
        image_of(&self.definition.definition, container).unwrap_or("?")
    }

    pub(in crate::action::ecs) fn facts(&self, container: &str) -> ColourFacts {
        ColourFacts {
            colour: self.name.clone(),
            service: self.service.clone(),
            task_definition: self.definition.arn(),
            image: image_of(&self.definition.definition, container).map(str::to_string),
            desired: self.live.desired_count,
        }
    }

    /// "blue runs web-blue:1 (repo/web:v1.0.0, 2/2 tasks)".
    pub(in crate::action::ecs) fn describe(&self, container: &str) -> String {
        format!(
            "{} runs {} ({}, {}/{} tasks)",
            self.name,
            self.definition.name(),
            self.image(container),
            self.live.running_count,
            self.live.desired_count
        )
    }
}

/// Both colours and the listener.
pub(in crate::action::ecs) struct Pair {
    pub(in crate::action::ecs) colours: [ColourNow; 2],
    /// The listener's target-group stickiness, kept when traffic moves.
    pub(in crate::action::ecs) stickiness: Option<TargetGroupStickinessConfig>,
}

impl Pair {
    /// The colour receiving all traffic; `None` while the listener is split.
    pub(in crate::action::ecs) fn live(&self) -> Option<&ColourNow> {
        self.colours.iter().find(|c| c.weight >= 100)
    }

    pub(in crate::action::ecs) fn other(&self, colour: &ColourNow) -> &ColourNow {
        if self.colours[0].name == colour.name {
            &self.colours[1]
        } else {
            &self.colours[0]
        }
    }

    pub(in crate::action::ecs) fn by_name(&self, name: &str) -> Option<&ColourNow> {
        self.colours.iter().find(|c| c.name == name)
    }

    /// "blue 90%, green 10%".
    pub(in crate::action::ecs) fn weights(&self) -> String {
        self.colours.iter().map(|c| format!("{} {}%", c.name, c.weight)).collect::<Vec<_>>().join(", ")
    }

    /// "blue runs …; green runs …".
    pub(in crate::action::ecs) fn describe(&self, container: &str) -> String {
        self.colours.iter().map(|c| c.describe(container)).collect::<Vec<_>>().join("; ")
    }

    pub(in crate::action::ecs) fn facts(
        &self,
        listener: &str,
        container: &str,
        previous: Option<ColourFacts>,
    ) -> BlueGreenFacts {
        BlueGreenFacts {
            backend: BACKEND.into(),
            listener: listener.to_string(),
            live: self.live().map(|c| c.name.clone()),
            weights: self.colours.iter().map(|c| (c.name.clone(), c.weight)).collect(),
            colours: self.colours.iter().map(|c| c.facts(container)).collect(),
            previous,
        }
    }
}

const BACKEND: &str = "ecs-blue-green";

/// One colour as recorded after a verified switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(in crate::action::ecs) struct ColourFacts {
    pub(in crate::action::ecs) colour: String,
    pub(in crate::action::ecs) service: String,
    pub(in crate::action::ecs) task_definition: String,
    pub(in crate::action::ecs) image: Option<String>,
    pub(in crate::action::ecs) desired: i32,
}

impl ColourFacts {
    /// "blue with web-blue:1 (repo/web:v1.0.0)".
    pub(in crate::action::ecs) fn describe(&self) -> String {
        format!("{} with {} ({})", self.colour, short(&self.task_definition), self.image.as_deref().unwrap_or("?"))
    }
}

/// The live facts of a blue-green outcome (`Outcome::live`), read by later
/// rollbacks from the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(in crate::action::ecs) struct BlueGreenFacts {
    pub(in crate::action::ecs) backend: String,
    pub(in crate::action::ecs) listener: String,
    /// The colour receiving all traffic.
    pub(in crate::action::ecs) live: Option<String>,
    pub(in crate::action::ecs) weights: BTreeMap<String, i32>,
    pub(in crate::action::ecs) colours: Vec<ColourFacts>,
    /// The colour that served all traffic before this change, as read then.
    pub(in crate::action::ecs) previous: Option<ColourFacts>,
}

impl BlueGreenFacts {
    /// Facts recorded for this listener, if `value` is such a record.
    pub(in crate::action::ecs) fn parse(value: &serde_json::Value, listener: &str) -> Option<BlueGreenFacts> {
        let facts: BlueGreenFacts = serde_json::from_value(value.clone()).ok()?;
        (facts.backend == BACKEND && facts.listener == listener).then_some(facts)
    }

    pub(in crate::action::ecs) fn live_colour(&self) -> Option<&ColourFacts> {
        let live = self.live.as_ref()?;
        self.colours.iter().find(|c| &c.colour == live)
    }

    pub(in crate::action::ecs) fn into_json(self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Refuses a pair whose colours cannot be told apart: behind one target
/// group, or two target groups tagged with the same colour. Taking either
/// for a pair would deploy into the live colour, or show it at 100% twice.
fn distinct(colours: &[ColourNow], bg: &BlueGreen) -> Result<(), ActionError> {
    let [a, b] = colours else { return Ok(()) };
    if a.target_group == b.target_group {
        return Err(ActionError::Failed(format!(
            "{} and {} are behind the same target group ({}): opsbot cannot tell the colours apart; give each colour its own target group",
            bg.blue_service, bg.green_service, a.target_group
        )));
    }
    if a.name == b.name {
        return Err(ActionError::Failed(format!(
            "the target groups of {} and {} are both tagged Color={}: opsbot cannot tell the colours apart; tag one with the other colour",
            bg.blue_service, bg.green_service, a.name
        )));
    }
    Ok(())
}

impl Ctx<'_> {
    /// (target group ARN, weight) the listener's default action forwards to,
    /// and its stickiness across target groups.
    async fn listener_weights(
        &self,
        bg: &BlueGreen,
    ) -> Result<(Vec<(String, i32)>, Option<TargetGroupStickinessConfig>), ActionError> {
        let listener = self
            .ask(
                "elasticloadbalancing:DescribeListeners",
                self.elb.describe_listeners().listener_arns(&bg.listener_arn).send(),
            )
            .await?;
        let action = listener
            .listeners
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|l| l.default_actions)
            .and_then(|a| a.into_iter().next())
            .ok_or_else(|| ActionError::Failed("the listener has no default action".into()))?;
        let stickiness = action.forward_config.as_ref().and_then(|f| f.target_group_stickiness_config.clone());
        let mut weights: Vec<(String, i32)> = action
            .forward_config
            .and_then(|f| f.target_groups)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tg| tg.target_group_arn.map(|arn| (arn, tg.weight.unwrap_or(1))))
            .collect();
        if weights.is_empty() {
            if let Some(arn) = action.target_group_arn {
                weights.push((arn, 1));
            }
        }
        Ok((weights, stickiness))
    }

    /// Reads both colours (service, task definition, `Color` tag) and the
    /// listener's weights.
    pub(in crate::action::ecs) async fn pair(&self, bg: &BlueGreen) -> Result<Pair, ActionError> {
        let (weights, stickiness) = self.listener_weights(bg).await?;
        let total: i32 = weights.iter().map(|(_, w)| *w).sum();
        let mut colours = Vec::new();
        for (service, url) in [(&bg.blue_service, &bg.blue_url), (&bg.green_service, &bg.green_url)] {
            let live = self.describe(service).await?;
            let target_group =
                live.load_balancers.iter().flatten().find_map(|lb| lb.target_group_arn.clone()).ok_or_else(|| {
                    ActionError::Failed(format!("{service} is not behind a load balancer target group"))
                })?;
            let tags = self
                .ask("elasticloadbalancing:DescribeTags", self.elb.describe_tags().resource_arns(&target_group).send())
                .await?;
            let name = tags
                .tag_descriptions
                .unwrap_or_default()
                .into_iter()
                .flat_map(|d| d.tags.unwrap_or_default())
                .find(|tag| tag.key.as_deref() == Some("Color"))
                .and_then(|tag| tag.value)
                .ok_or_else(|| ActionError::Failed(format!("target group of {service} has no Color tag")))?;
            let definition = self.definition(live.task_definition.as_deref().unwrap_or_default()).await?;
            let weight = weights.iter().filter(|(arn, _)| *arn == target_group).map(|(_, w)| *w).sum::<i32>();
            let weight = if total > 0 { weight * 100 / total } else { 0 };
            colours.push(ColourNow {
                name,
                service: service.clone(),
                target_group,
                url: url.clone(),
                live,
                definition,
                weight,
            });
        }
        distinct(&colours, bg)?;
        if colours.iter().map(|c| c.weight).sum::<i32>() == 0 {
            return Err(ActionError::Failed("the listener forwards to neither colour's target group".into()));
        }
        let green = colours.pop().expect("two colours");
        let blue = colours.pop().expect("two colours");
        Ok(Pair { colours: [blue, green], stickiness })
    }
}
