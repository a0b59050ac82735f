//! Samples into the running batch: each recipe's trajectory tags into the batch's
//! `Trajectories` (aligned per phase, see `pdtf_models::batch::trajectory`), and the Good
//! values of its quality attributes' tags into the twin (the summary's `quality`).
//!
//! The trajectories follow the twin: a new batch gets empty ones from its recipe's
//! `[recipes.trajectories]`, each phase run the twin starts begins a phase in them, a reset
//! drops them. They are not in the twin (a stored type) but beside it, and go into the
//! periodic snapshots only (they are the large part), so a restart keeps them up to the last
//! `snapshot_interval_s`; values while the agent was down are missing points, never filled.

use pdtf_models::batch::{BatchTwin, Trajectories, TrajectorySpec};
use pdtf_models::{Quality, Sample, TagId, Timestamp};

/// A line's trajectory feed.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// Per recipe id: its trajectory spec and tags.
    pub specs: Vec<(String, TrajectorySpec, Vec<TagId>)>,
    /// The running (or last ended) batch's trajectories.
    pub current: Option<Trajectories>,
    /// The batch they belong to: (id, start).
    batch: Option<(String, Timestamp)>,
    /// Values or phases added since the last periodic snapshot.
    pub unsaved: bool,
}

fn key(twin: &BatchTwin) -> Option<(String, Timestamp)> {
    twin.batch.as_ref().map(|b| (b.id.clone(), b.started))
}

impl Feed {
    pub fn new(specs: Vec<(String, TrajectorySpec, Vec<TagId>)>) -> Self {
        Feed {
            specs,
            ..Feed::default()
        }
    }

    /// After the twin changed: a new batch gets fresh trajectories (or `restored`, when they
    /// are its own), new phase runs begin, a reset drops them.
    pub fn follow(&mut self, twin: &BatchTwin, restored: Option<Trajectories>) {
        let k = key(twin);
        if k != self.batch {
            self.batch = k;
            self.current = restored.or_else(|| {
                let b = twin.batch.as_ref()?;
                self.specs
                    .iter()
                    .find(|(id, _, _)| *id == b.recipe.reference.id)
                    .map(|(_, spec, tags)| Trajectories::new(*spec, tags))
            });
        }
        if let (Some(t), Some(b)) = (self.current.as_mut(), twin.batch.as_ref()) {
            let begun = t.phases.len() + t.phases_not_kept as usize;
            for run in b.phases.iter().skip(begun) {
                t.begin_phase(&run.name, run.start);
                self.unsaved = true;
            }
        }
    }

    /// One sample of the line while `twin`'s batch is open.
    pub fn on_sample(&mut self, twin: &mut BatchTwin, s: &Sample) {
        let Some(b) = twin.batch.as_ref().filter(|b| b.ended.is_none()) else {
            return;
        };
        if let Some(t) = self.current.as_mut() {
            if t.slot(s.tag).is_some() {
                t.add(s);
                self.unsaved = true;
            }
        }
        let quality = b.recipe.quality.iter().position(|q| q.tag == Some(s.tag));
        if let Some(i) = quality {
            if let (Quality::Good, Some(v)) = (s.quality, s.number()) {
                if v.is_finite() {
                    twin.quality_value(i, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdtf_models::batch::{Actor, QualitySpec};

    const SPEC: TrajectorySpec = TrajectorySpec {
        resolution_ms: 1_000,
        max_points: 100,
        max_phases: 8,
    };

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + s * 1000)
    }

    fn sample(tag: u32, v: f64, s: i64) -> Sample {
        Sample::new(TagId(tag), v, Quality::Good, Some(at(s)), at(s))
    }

    #[test]
    fn trajectories_and_quality_values_follow_the_batch_and_its_phases() {
        let mut recipe = crate::batch::test_recipe(1, &["preheat", "spraying"]);
        recipe.quality.push(QualitySpec {
            name: "moisture".into(),
            unit: "%".into(),
            lo: Some(1.0),
            hi: Some(3.0),
            tag: Some(TagId(2)),
        });
        let mut feed = Feed::new(vec![("gran".into(), SPEC, vec![TagId(0)])]);
        let mut twin = BatchTwin::new("l", true);
        feed.follow(&twin, None);
        feed.on_sample(&mut twin, &sample(0, 1.0, 0));
        assert!(feed.current.is_none(), "no batch, no trajectories");

        twin = twin
            .start("B-1", &recipe, at(0), Actor::Agent, true)
            .unwrap()
            .next;
        feed.follow(&twin, None);
        for s in 0..5 {
            feed.on_sample(&mut twin, &sample(0, 10.0 + s as f64, s));
            feed.on_sample(&mut twin, &sample(1, 99.0, s)); // not tracked
        }
        feed.on_sample(&mut twin, &sample(2, 2.5, 4));
        twin = twin.phase_to(None, at(10), Actor::Agent).unwrap().next;
        feed.follow(&twin, None);
        feed.on_sample(&mut twin, &sample(0, 50.0, 12));
        let t = feed.current.as_ref().unwrap();
        assert_eq!(
            t.phases
                .iter()
                .map(|p| p.phase.as_str())
                .collect::<Vec<_>>(),
            ["preheat", "spraying"]
        );
        assert_eq!(t.phases[0].series(0).len(), 5);
        assert_eq!(t.phases[1].series(0)[0].index, 2, "2 s into spraying");
        assert_eq!(twin.batch.as_ref().unwrap().quality_values, [Some(2.5)]);
        assert!(feed.unsaved);

        // The end: no more values; a reset drops the trajectories; a new batch starts fresh.
        twin = twin.phase_to(None, at(20), Actor::Agent).unwrap().next;
        feed.follow(&twin, None);
        feed.on_sample(&mut twin, &sample(0, 70.0, 21));
        assert_eq!(feed.current.as_ref().unwrap().phases[1].series(0).len(), 1);
        twin = twin
            .command(pdtf_models::batch::ProcCommand::Reset, at(30), Actor::Agent)
            .unwrap()
            .next;
        feed.follow(&twin, None);
        assert!(feed.current.is_none());
        twin = twin
            .start("B-2", &recipe, at(40), Actor::Agent, true)
            .unwrap()
            .next;
        feed.follow(&twin, None);
        let t = feed.current.as_ref().unwrap();
        assert_eq!((t.phases.len(), t.phases[0].series(0).len()), (1, 0));
    }
}
