//! The same seed gives the bitwise-same history, population and archive, whatever the
//! problem's thread count and the order its chunks are evaluated in.

mod common;
use common::{assert_same_run, hash_algo, knapsack_algo, Threaded};
use evo::RunOptions;

#[test]
fn same_seed_same_run_whatever_the_thread_count() {
    let (p, algo) = knapsack_algo(40);
    let reference = algo
        .run(
            &Threaded {
                inner: p.clone(),
                threads: 1,
            },
            123,
            RunOptions::default(),
        )
        .unwrap();
    for threads in [2, 3, 8] {
        let r = algo
            .run(
                &Threaded {
                    inner: p.clone(),
                    threads,
                },
                123,
                RunOptions::default(),
            )
            .unwrap();
        assert_same_run(&reference, &r);
    }
    let plain = algo.run(&p, 123, RunOptions::default()).unwrap();
    assert_same_run(&reference, &plain);
}

#[test]
fn same_seed_same_run_with_four_objectives() {
    let (p, algo) = hash_algo(25);
    let a = algo
        .run(
            &Threaded {
                inner: p.clone(),
                threads: 1,
            },
            9,
            RunOptions::default(),
        )
        .unwrap();
    let b = algo
        .run(
            &Threaded {
                inner: p.clone(),
                threads: 5,
            },
            9,
            RunOptions::default(),
        )
        .unwrap();
    assert_same_run(&a, &b);
    assert!(a.history.iter().all(|r| r.hypervolume.is_some()));
}

#[test]
fn different_seeds_give_different_runs() {
    let (p, algo) = knapsack_algo(10);
    let a = algo.run(&p, 1, RunOptions::default()).unwrap();
    let b = algo.run(&p, 2, RunOptions::default()).unwrap();
    assert_ne!(a.population, b.population);
}
