//! The memory window: reclaim stalls and OOM kills per cgroup.

/// The family in the sampler.
#[derive(Default)]
pub struct State;

impl super::FamilyWindow for State {
    type Part = crate::model::memory::Part;

    fn window(&mut self, cx: &mut super::Cx<'_>, part: &mut Self::Part) {
        let (before, after) = (&cx.before.memory, &cx.after.memory);
        part.reclaim = super::latency_window(&before.reclaim, &after.reclaim, cx.resolve);
        part.oom_kills = super::count_window(&before.oom_kills, &after.oom_kills, cx.resolve);
    }
}
