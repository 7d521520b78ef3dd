//! Probe of the Automerge facts the catalog relies on: batch-inserting N scalars in bucket maps
//! of CHUNK, saving, loading and a full sync to an empty peer.
//! `cargo run --release -p edgerate-replication --example am_batch -- 50000 1000`

use automerge::{
    hydrate,
    sync::{self, SyncDoc},
    transaction::Transactable,
    AutoCommit, ReadDoc, ScalarValue, ROOT,
};
use std::collections::HashMap;
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(50_000);
    let chunk: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(n);
    let t = Instant::now();
    let mut doc = AutoCommit::new();
    let mut i = 0;
    let mut c = 0;
    while i < n {
        let mut m: HashMap<String, hydrate::Value> = HashMap::new();
        for j in i..(i + chunk).min(n) {
            m.insert(
                format!("{}", 1_000_000 + j * 7),
                hydrate::Value::Scalar(ScalarValue::Str(
                    format!(
                        "r1\x1fName {}\x1f0.0123\x1f0\x1f60\x1f60\x1f0\x1f\x1f\x1fActive",
                        j % 300
                    )
                    .into(),
                )),
            );
        }
        doc.batch_create_object(ROOT, format!("c{c}"), &hydrate::Value::Map(m.into()), false)
            .unwrap();
        doc.commit();
        i += chunk;
        c += 1;
    }
    println!("batch insert {:?}", t.elapsed());
    let t = Instant::now();
    let bytes = doc.save();
    println!("save {:?} {} bytes", t.elapsed(), bytes.len());
    let t = Instant::now();
    let mut doc2 = AutoCommit::load(&bytes).unwrap();
    println!("load {:?}", t.elapsed());
    // sync to empty peer
    let t = Instant::now();
    let mut peer = AutoCommit::new();
    let (mut s1, mut s2) = (sync::State::new(), sync::State::new());
    loop {
        let m1 = doc2.sync().generate_sync_message(&mut s1);
        if let Some(m) = m1.clone() {
            peer.sync().receive_sync_message(&mut s2, m).unwrap();
        }
        let m2 = peer.sync().generate_sync_message(&mut s2);
        if let Some(m) = m2.clone() {
            doc2.sync().receive_sync_message(&mut s1, m).unwrap();
        }
        if m1.is_none() && m2.is_none() {
            break;
        }
    }
    println!("sync to empty {:?} keys {}", t.elapsed(), peer.length(ROOT));
}
