//! The line's batch twin in the agent: batch commands over MQTT (`command`) with their
//! duplicate window (`requests`). The decisions are pure; the line pipeline commits them
//! and only then applies them and answers.

pub mod command;
pub mod requests;
pub mod state;
pub mod tags;

use crate::config::{Config, LineConfig, RecipeConfig};
use command::Policy;
use pdtf_models::batch::{BatchTwin, MaterialPlan, QualitySpec, Recipe, RecipePhase, RecipeRef};
use pdtf_models::TagId;
use requests::RequestWindow;
use tokio::sync::mpsc;

/// A reply to publish: topic and payload (QoS 1, not retained).
pub type Reply = (String, Vec<u8>);

/// Replies waiting for the publisher, per agent; when full the reply is dropped and
/// counted (the command's record, with its outcome, is already committed).
pub const REPLY_CHANNEL: usize = 256;

/// A line's batch twin with what it needs to take commands; owned by the line pipeline.
pub struct LineBatch {
    pub twin: BatchTwin,
    /// The recipes this line may run.
    pub recipes: Vec<Recipe>,
    pub policy: Policy,
    pub seen: RequestWindow,
    /// The line's batch tags (tag-driven batches).
    pub tags: tags::BatchTags,
    /// `P/cmd/reply`: a reply goes to `{reply_prefix}/{request_id}`.
    pub reply_prefix: String,
    /// `P/batch`: the retained batch state.
    pub state_topic: String,
    pub replies: Option<mpsc::Sender<Reply>>,
}

impl LineBatch {
    /// The batch twin of `line`, when its configuration drives one.
    pub fn of(c: &Config, line: &LineConfig, ids: &dyn Fn(&str) -> Option<TagId>) -> Option<Self> {
        let b = line.batch.as_ref()?;
        let recipes = c
            .recipes
            .iter()
            .filter(|r| b.recipes.is_empty() || b.recipes.contains(&r.id))
            .map(|r| recipe(r, ids))
            .collect();
        Some(LineBatch {
            twin: BatchTwin::new(line.name(), b.state_tag.is_none()),
            recipes,
            policy: Policy {
                allow_users: b.allow_users.clone(),
            },
            seen: RequestWindow::default(),
            tags: tags::BatchTags::of(b, &c.recipes, ids),
            reply_prefix: format!("{}/cmd/reply", c.line_prefix(line)),
            state_topic: format!("{}/batch", c.line_prefix(line)),
            replies: None,
        })
    }
}

/// The batch twin's view of a configured recipe.
pub fn recipe(r: &RecipeConfig, ids: &dyn Fn(&str) -> Option<TagId>) -> Recipe {
    Recipe {
        reference: RecipeRef {
            id: r.id.clone(),
            version: r.version,
            product: r.product.clone(),
            product_code: r.product_code.clone(),
        },
        phases: r
            .phases
            .iter()
            .map(|p| RecipePhase {
                name: p.name.clone(),
                min_duration_s: p.min_duration_s,
                max_duration_s: p.max_duration_s,
            })
            .collect(),
        materials: r
            .materials
            .iter()
            .map(|m| MaterialPlan {
                material: m.material.clone(),
                planned: m.planned,
                unit: m.unit.clone(),
                tolerance_pct: m.tolerance_pct,
            })
            .collect(),
        quality: r
            .quality
            .iter()
            .map(|q| QualitySpec {
                name: q.name.clone(),
                unit: q.unit.clone(),
                lo: q.lo,
                hi: q.hi,
                tag: q.tag.as_deref().and_then(ids),
            })
            .collect(),
    }
}

/// A recipe for unit tests: id `gran`, product `G`, the named phases without durations, no
/// materials or quality attributes.
#[cfg(test)]
pub(crate) fn test_recipe(version: u32, phases: &[&str]) -> Recipe {
    Recipe {
        reference: RecipeRef {
            id: "gran".into(),
            version,
            product: "G".into(),
            product_code: "G1".into(),
        },
        phases: phases
            .iter()
            .map(|n| RecipePhase {
                name: (*n).into(),
                min_duration_s: None,
                max_duration_s: None,
            })
            .collect(),
        materials: vec![],
        quality: vec![],
    }
}
