//! Least-cost routing in process: `routing::routes` over 5 provider cards of 200k
//! carrier-shaped prefixes each (80 % of them shared), for full-length numbers of the same plan,
//! priced for a 60 s call. The target is ≤ 2 µs per number (DESIGN.md).
//!
//! `cargo bench -p edgerate-model --bench routing`

/// The node's allocator (node/src/main.rs), so the index lies in memory as it does there: in
/// huge pages where the kernel gives them, which saves most TLB misses on a 1M-prefix card.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgerate_model::index::PrefixIndex;
use edgerate_model::pricing::{CardPricing, Jurisdiction};
use edgerate_model::routing::{self, Call, Order, Provider, Quality};
use edgerate_model::rule::Rule;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use std::sync::Arc;

const CARDS: usize = 5;
const PREFIXES: usize = 200_000;

/// One provider card: the shared NPA-NXX ranges and 20 % prefixes of its own.
fn card(seed: u64) -> (PrefixIndex, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name: Arc<str> = Arc::from("Destination");
    let mut index = PrefixIndex::with_capacity(PREFIXES);
    let mut prefixes = Vec::with_capacity(PREFIXES);
    let shared = PREFIXES * 4 / 5;
    for i in 0..shared {
        let prefix = format!("1{}", 200_000 + (i * 7919) % 799_999);
        if index.get(&prefix).is_none() {
            index.insert(
                &prefix,
                Rule::new(name.clone(), Decimal::new(rng.random_range(1..10_000), 4)),
            );
            prefixes.push(prefix);
        }
    }
    while index.len() < PREFIXES {
        let prefix = format!("{}", rng.random_range(20_000_000u64..99_999_999));
        if index.get(&prefix).is_none() {
            index.insert(
                &prefix,
                Rule::new(name.clone(), Decimal::new(rng.random_range(1..10_000), 4)),
            );
            prefixes.push(prefix);
        }
    }
    index.compact();
    (index, prefixes)
}

fn benches(c: &mut Criterion) {
    let cards: Vec<(PrefixIndex, Vec<String>)> = (0..CARDS as u64).map(card).collect();
    let mut rng = StdRng::seed_from_u64(99);
    let numbers: Vec<String> = (0..100_000)
        .map(|_| {
            let prefixes = &cards[rng.random_range(0..CARDS)].1;
            let mut n = prefixes[rng.random_range(0..prefixes.len())].clone();
            while n.len() < 11 {
                n.push(char::from(b'0' + rng.random_range(0..10u8)));
            }
            n
        })
        .collect();
    let providers: Vec<Provider> = cards
        .iter()
        .map(|(index, _)| Provider {
            index,
            pricing: CardPricing::default(),
        })
        .collect();
    let mut i = 0;
    c.bench_function("lcr_5x200k", |b| {
        b.iter(|| {
            i = if i + 1 == numbers.len() { 0 } else { i + 1 };
            let call = Call {
                number: black_box(&numbers[i]),
                duration: Decimal::from(60),
                jurisdiction: Jurisdiction::Unknown,
                sell: Some(Decimal::new(5, 2)),
                assure: true,
                min_asr: None,
                order: Order::Cost,
                limit: 10,
            };
            black_box(routing::routes(&providers, &call, |_, _| {
                Quality::default()
            }))
        })
    });
}

criterion_group!(routing_bench, benches);
criterion_main!(routing_bench);
