//! The towers' threads are made once per run: in a 2-tower run of 200 steps, the process's
//! set of threads (`/proc/self/task`) after step 10 is the same after every later step, and
//! the threads that ran the towers' work are in it. Its own test binary, with this one test,
//! so that no other test starts or ends threads meanwhile.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use model_format::arch::IMAGE_LEN;
use model_format::cifar::Records;
use tch::Device;
use train::trainer::{train_observed, TrainConfig};

fn threads() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux lists a process's threads in /proc/self/task")
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect()
}

#[test]
fn a_two_tower_run_keeps_the_same_threads_from_step_10_to_200() {
    let records: Vec<u8> = (0..32usize)
        .flat_map(|r| std::iter::once((r % 10) as u8).chain((0..IMAGE_LEN).map(move |i| ((i * 7 + r) % 256) as u8)))
        .collect();
    let data = Arc::new(Records::from_bytes(records, "synthetic").unwrap());
    let dir = std::env::temp_dir().join(format!("tower-threads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = TrainConfig {
        max_steps: 200,
        batch_size: 2,
        towers_per_device: 2,
        devices: vec![Device::Cpu],
        log_frequency: 0,
        summary_every: 0,
        checkpoint_every: 0,
        ..TrainConfig::new(&dir)
    };
    let (mut at_10, mut checked) = (None::<BTreeSet<u32>>, 0);
    let mut observe = |step: u64, out: &train::towers::StepOutput| {
        let now = threads();
        let towers: BTreeSet<u32> = out.tower_threads.iter().map(|t| t.expect("a Linux thread id")).collect();
        assert_eq!(towers.len(), 2, "two towers, two threads");
        match (step, &at_10) {
            (..10, _) => {}
            (10, _) => at_10 = Some(now),
            (_, Some(expected)) => {
                assert_eq!(&now, expected, "threads changed at step {step}");
                assert!(
                    towers.is_subset(expected),
                    "step {step}'s tower threads {towers:?} were not running at step 10"
                );
                checked += 1;
            }
            (_, None) => unreachable!(),
        }
    };
    let outcome = train_observed(&config, data, None, &AtomicBool::new(false), &mut observe).unwrap();
    assert_eq!((outcome.step, checked), (200, 190));
    std::fs::remove_dir_all(dir).unwrap();
}
