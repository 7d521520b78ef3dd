//! The hot path in process: longest-prefix match on a 1M-prefix card, and the billing formula.
//!
//! `cargo bench -p edgerate-model --bench hot_path` — criterion reports the median per
//! lookup; before it, a p99 is measured over batches of 16 lookups (timer overhead makes
//! single-lookup timing meaningless at this scale) and printed.

/// The node's allocator (node/src/main.rs), so the index lies in memory as it does there: in
/// huge pages where the kernel gives them, which saves most TLB misses on a 1M-prefix card.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgerate_model::billing::{charge, CardBilling, RuleBilling};
use edgerate_model::index::{Match, PrefixIndex};
use edgerate_model::rule::Rule;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Instant;

const PREFIXES: usize = 1_000_000;

fn rule(rate: i64, name: &Arc<str>) -> Rule {
    Rule::new(name.clone(), Decimal::new(rate, 4))
}

/// The adversarial card: 1M distinct prefixes of uniformly random 3-10 digits, looked up with
/// 12-digit extensions of random prefixes mixed with random 12-digit numbers (no locality).
fn random_card() -> (PrefixIndex, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(7);
    let names: Vec<Arc<str>> = (0..500)
        .map(|i| Arc::from(format!("Destination {i}")))
        .collect();
    let mut index = PrefixIndex::with_capacity(PREFIXES);
    let mut prefixes = Vec::with_capacity(PREFIXES);
    while index.len() < PREFIXES {
        let len = rng.random_range(3..=10);
        let prefix: String = (0..len)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect();
        if index.get(&prefix).is_none() {
            index.insert(
                &prefix,
                rule(
                    rng.random_range(1..10_000),
                    &names[prefixes.len() % names.len()],
                ),
            );
            prefixes.push(prefix);
        }
    }
    index.compact();
    let numbers = (0..100_000)
        .map(|i| {
            let mut n = if i % 2 == 0 {
                prefixes[rng.random_range(0..prefixes.len())].clone()
            } else {
                String::new()
            };
            while n.len() < 12 {
                n.push(char::from(b'0' + rng.random_range(0..10u8)));
            }
            n
        })
        .collect();
    (index, numbers)
}

/// A carrier-shaped card: the North American plan at NPA-NXX depth (`1` + 800 area codes ×
/// 1000 exchanges, 7 digits) plus 200k international prefixes under real-looking country
/// codes (2-8 digits); looked up with full-length numbers drawn from the same plan.
fn carrier_card() -> (PrefixIndex, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(11);
    let names: Vec<Arc<str>> = (0..500)
        .map(|i| Arc::from(format!("Destination {i}")))
        .collect();
    let mut index = PrefixIndex::with_capacity(PREFIXES);
    let mut prefixes = Vec::with_capacity(PREFIXES);
    for npa in 200..1000 {
        for nxx in 0..1000 {
            let prefix = format!("1{npa}{nxx:03}");
            index.insert(
                &prefix,
                rule(
                    rng.random_range(1..10_000),
                    &names[prefixes.len() % names.len()],
                ),
            );
            prefixes.push(prefix);
        }
    }
    let countries = [
        "44", "33", "49", "39", "34", "31", "32", "41", "43", "46", "47", "48", "351", "353",
        "358", "61", "81", "82", "86", "91", "52", "55", "54", "57", "27", "234", "254", "971",
        "966", "972",
    ];
    while index.len() < PREFIXES {
        let cc = countries[rng.random_range(0..countries.len())];
        let extra = rng.random_range(0..=6);
        let prefix: String = cc
            .chars()
            .chain((0..extra).map(|_| char::from(b'0' + rng.random_range(0..10u8))))
            .collect();
        if index.get(&prefix).is_none() {
            index.insert(
                &prefix,
                rule(
                    rng.random_range(1..10_000),
                    &names[prefixes.len() % names.len()],
                ),
            );
            prefixes.push(prefix);
        }
    }
    index.compact();
    let numbers = (0..100_000)
        .map(|_| {
            let mut n = prefixes[rng.random_range(0..prefixes.len())].clone();
            while n.len() < 11 {
                n.push(char::from(b'0' + rng.random_range(0..10u8)));
            }
            n
        })
        .collect();
    (index, numbers)
}

/// Median and p99 per lookup over batches of 16; `read` takes what the caller uses of a match.
fn p99_per_lookup<T>(
    index: &PrefixIndex,
    numbers: &[String],
    read: impl Fn(Match<'_>) -> T,
) -> (f64, f64) {
    const BATCH: usize = 16;
    let mut per_lookup: Vec<f64> = Vec::with_capacity(numbers.len() / BATCH * 5);
    for _ in 0..5 {
        for batch in numbers.chunks_exact(BATCH) {
            let t = Instant::now();
            for n in batch {
                black_box(index.longest_match(black_box(n)).map(&read));
            }
            per_lookup.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
        }
    }
    per_lookup.sort_by(f64::total_cmp);
    (
        per_lookup[per_lookup.len() / 2],
        per_lookup[per_lookup.len() * 99 / 100],
    )
}

/// The machine's baseline: one dependent random read from a 256 MiB array (pointer chase), the
/// cost of a single cache miss to memory, measured in the same run.
fn memory_latency_ns() -> f64 {
    let len = 32 * 1024 * 1024; // u64s: 256 MiB
    let mut rng = StdRng::seed_from_u64(3);
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut next = vec![0u64; len];
    for w in order.windows(2) {
        next[w[0]] = w[1] as u64;
    }
    let steps = 2_000_000;
    let mut at = order[0];
    let t = Instant::now();
    for _ in 0..steps {
        at = next[at] as usize;
    }
    black_box(at);
    t.elapsed().as_nanos() as f64 / steps as f64
}

fn benches(c: &mut Criterion) {
    println!(
        "baseline: one random memory read (256 MiB pointer chase): {:.0} ns",
        memory_latency_ns()
    );
    for (name, (index, numbers)) in [
        ("longest_match_1m_carrier", carrier_card()),
        ("longest_match_1m_random", random_card()),
    ] {
        let (median, p99) = p99_per_lookup(&index, &numbers, |m| m.rate);
        let (rule_median, rule_p99) = p99_per_lookup(&index, &numbers, |m| m.rule().connect_fee);
        println!(
            "{name}: batches of 16: median {median:.0} ns, p99 {p99:.0} ns per lookup (price); \
             with the whole rule read: median {rule_median:.0} ns, p99 {rule_p99:.0} ns; \
             index {:.0} MiB for {} rules",
            index.heap_bytes() as f64 / f64::from(1 << 20),
            index.len()
        );
        let mut i = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                // Not `%`: a division costs as much as a cached lookup.
                i = if i + 1 == numbers.len() { 0 } else { i + 1 };
                black_box(index.longest_match(black_box(&numbers[i])).map(|m| m.rate))
            })
        });
    }
    let rule = RuleBilling {
        rate: Decimal::new(123, 4),
        connect_fee: Decimal::new(5, 3),
        mcd: 30,
        pulse: 6,
        grace: 0,
    };
    let card = CardBilling::default();
    let duration = Decimal::new(615, 1);
    c.bench_function("billing_charge", |b| {
        b.iter(|| black_box(charge(black_box(duration), &rule, &card)))
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
