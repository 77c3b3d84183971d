//! The memory window: reclaim stalls and OOM kills per cgroup.

/// The family in the sampler.
#[derive(Default)]
pub struct State;

impl super::FamilyWindow for State {
    fn window(&mut self, cx: &mut super::Cx<'_>, snapshot: &mut crate::model::Snapshot) {
        let (before, after) = (&cx.before.memory, &cx.after.memory);
        snapshot.reclaim = super::latency_window(&before.reclaim, &after.reclaim, cx.resolve);
        snapshot.oom_kills = super::count_window(&before.oom_kills, &after.oom_kills, cx.resolve);
    }
}
