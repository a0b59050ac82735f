//! The ISA-88 batch view of a line: the procedural state machine (`procedure`), the batch
//! twin that runs a recipe (`twin`, `recipe`), what it records (`record`), and the batch's
//! aligned trajectories (`trajectory`). All pure: the line pipeline feeds them commands, tag
//! values and times, and records what they decide.

pub mod procedure;
pub mod recipe;
pub mod record;
mod summary;
pub mod trajectory;
pub mod twin;

pub use procedure::{ProcCommand, ProcState, Refused};
pub use recipe::{MaterialPlan, QualitySpec, Recipe, RecipePhase};
pub use record::{
    Actor, BatchChange, BatchEvent, BatchSnapshot, Charge, MaterialSummary, PhaseSummary,
    QualitySummary, RecipeRef, SeenRequest, Summary,
};
pub use trajectory::{Outside, PhaseTrajectory, Placed, Point, Trajectories, TrajectorySpec};
pub use twin::{Batch, BatchTwin, PhaseRun, Plan};
