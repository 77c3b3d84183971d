//! Block family: request counts equal /proc/diskstats exactly.

use std::ffi::CString;

use sonde::{probes::ProbeOptions, sampler::Sampler};

use crate::{privileged, EioFs, LoopDevice, TestCgroup, Workload};

const BLOCKS: usize = 64;
const BLOCK_BYTES: usize = 4096;

#[test]
fn direct_io_counted_exactly_like_diskstats() {
    if !privileged() {
        return;
    }
    let probes = crate::load_probes("block", ProbeOptions::default());
    let device = LoopDevice::new("blk", 16 << 20);
    let cgroup = TestCgroup::new("blk");
    let path = CString::new(device.path.as_os_str().as_encoded_bytes()).expect("path");
    // O_DIRECT needs an aligned buffer, mapped before the fork.
    let aligned = crate::AlignedBuffer::new(BLOCK_BYTES);
    let buffer = aligned.ptr();
    let workload = Workload::fork(&cgroup, || {
        // SAFETY: raw I/O on a valid path and an aligned, mapped buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_DIRECT);
            if fd < 0 {
                libc::_exit(6);
            }
            // Every other block, so that no two requests can merge.
            for i in 0..BLOCKS {
                let offset = (2 * i * BLOCK_BYTES) as libc::off_t;
                if libc::pwrite(fd, buffer, BLOCK_BYTES, offset) != BLOCK_BYTES as isize {
                    libc::_exit(7);
                }
            }
            for i in 0..BLOCKS {
                let offset = (2 * i * BLOCK_BYTES) as libc::off_t;
                if libc::pread(fd, buffer, BLOCK_BYTES, offset) != BLOCK_BYTES as isize {
                    libc::_exit(8);
                }
            }
            libc::close(fd);
        }
    });
    // Let whatever the new device attracted (partition scans) finish first.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (reads_before, writes_before) = device.diskstats();
    let mut sampler = Sampler::start(probes).expect("first reading");
    workload.go();
    assert_eq!(workload.wait(), 0);
    let snapshot = sampler.tick().expect("second reading");
    let (reads_after, writes_after) = device.diskstats();

    let reads = snapshot
        .device_io(&device.name, "read")
        .expect("reads of the loop device");
    let writes = snapshot
        .device_io(&device.name, "write")
        .expect("writes of the loop device");
    assert_eq!(
        reads.completed,
        reads_after - reads_before,
        "reads vs /proc/diskstats"
    );
    assert_eq!(
        writes.completed,
        writes_after - writes_before,
        "writes vs /proc/diskstats"
    );
    assert!(reads.completed >= BLOCKS as u64 && writes.completed >= BLOCKS as u64);
    assert_eq!(reads.latency.count(), reads.completed);
    assert_eq!(writes.latency.count(), writes.completed);
    assert!(reads.p50_secs.is_some_and(|s| s > 0.0) && writes.p50_secs.is_some_and(|s| s > 0.0));
    assert!(reads.errors.is_empty() && writes.errors.is_empty());
    assert_eq!((reads.in_flight, writes.in_flight), (0, 0));
    assert_eq!(snapshot.lost(), 0, "{:?}", snapshot.losses);
}

const BAD_OFFSET: u64 = 8 << 20;

#[test]
fn io_errors_counted_with_their_device() {
    if crate::vm_lacks("python3 and fusepy (the FUSE fixture that injects EIO)") {
        return;
    }
    if !privileged() {
        return;
    }
    let probes = crate::load_probes("block", ProbeOptions::default());
    let fs = EioFs::mount(16 << 20, BAD_OFFSET, 64 << 10);
    let device = LoopDevice::over(&fs.image());
    let cgroup = TestCgroup::new("blkerr");
    let path = CString::new(device.path.as_os_str().as_encoded_bytes()).expect("path");
    // O_DIRECT needs an aligned buffer, mapped before the fork.
    let aligned = crate::AlignedBuffer::new(BLOCK_BYTES);
    let buffer = aligned.ptr();
    // Three reads inside the bad range, five outside; the exit status says
    // how many failed with EIO.
    let workload = Workload::fork(&cgroup, || {
        // SAFETY: raw I/O on a valid path and an aligned, mapped buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECT);
            if fd < 0 {
                libc::_exit(100);
            }
            let mut failed = 0;
            for i in 0..3u64 {
                let offset = (BAD_OFFSET + i * 2 * BLOCK_BYTES as u64) as libc::off_t;
                if libc::pread(fd, buffer, BLOCK_BYTES, offset) < 0
                    && *libc::__errno_location() == libc::EIO
                {
                    failed += 1;
                }
            }
            for i in 0..5u64 {
                let offset = (i * 2 * BLOCK_BYTES as u64) as libc::off_t;
                if libc::pread(fd, buffer, BLOCK_BYTES, offset) != BLOCK_BYTES as isize {
                    libc::_exit(101);
                }
            }
            libc::close(fd);
            libc::_exit(failed);
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (reads_before, _) = device.diskstats();
    let mut sampler = Sampler::start(probes).expect("first reading");
    workload.go();
    let failed = workload.wait();
    let snapshot = sampler.tick().expect("second reading");
    let (reads_after, _) = device.diskstats();
    assert_eq!(failed, 3, "the fixture made three reads fail");
    let reads = snapshot
        .device_io(&device.name, "read")
        .expect("reads of the loop device");
    assert_eq!(reads.errors.get("EIO"), Some(&3), "{reads:?}");
    assert_eq!(reads.errors.len(), 1);
    // The kernel's count of completed reads, the failed ones among them.
    assert_eq!(
        reads.completed,
        reads_after - reads_before,
        "reads vs /proc/diskstats: {reads:?}"
    );
    // Each failed request is also an event naming its device and sector:
    // the three bad reads, each at its own offset inside the bad range.
    let ours: Vec<_> = snapshot
        .block
        .io_errors
        .iter()
        .filter(|e| e.device == device.name)
        .collect();
    assert_eq!(ours.len(), 3, "{:?}", snapshot.block.io_errors);
    let mut sectors: Vec<u64> = ours.iter().map(|e| e.sector).collect();
    sectors.sort_unstable();
    let want: Vec<u64> = (0..3u64)
        .map(|i| (BAD_OFFSET + i * 2 * BLOCK_BYTES as u64) / 512)
        .collect();
    assert_eq!(sectors, want);
    for e in ours {
        assert_eq!(
            (e.kind, e.op, e.error.as_str()),
            ("io_error", "read", "EIO")
        );
    }
}
