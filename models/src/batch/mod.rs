//! The ISA-88 batch view of a line: the procedural state machine (`procedure`) and the
//! batch's aligned trajectories (`trajectory`). Both are pure: the line pipeline feeds them
//! commands, tag values and times, and records what they decide.

pub mod procedure;
pub mod trajectory;

pub use procedure::{ProcCommand, ProcState, Refused};
pub use trajectory::{Outside, PhaseTrajectory, Placed, Point, Trajectories, TrajectorySpec};
