//! Writes a format fixture: `make_fixture <dir>` creates a database whose collections hold
//! `trovedb_tests::fixture_contents()`, with a sealed segment, a deletion file and an
//! unsealed WAL tail, so a reader of that format version is exercised end to end.
//! Used once per released format version: `tests/fixtures/v<N>/`.

use trovedb::{Database, DbOptions};
use trovedb_tests::{fixture_contents, FIXTURE_VERSION};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: make_fixture <dir>"))?;
    let db = Database::open(&dir, DbOptions::default().seal_threshold_rows(usize::MAX))?;
    for (name, cfg, model) in fixture_contents(FIXTURE_VERSION) {
        let c = db.create_collection(name, &cfg)?;
        let n = model.keys().max().map_or(0, |m| m + 1);
        // Everything first (sealed), then deletions and the last tenth again (WAL tail).
        let all: Vec<u64> = (0..n).collect();
        let deleted: Vec<u64> = all
            .iter()
            .copied()
            .filter(|id| !model.contains_key(id))
            .collect();
        let write = |ids: &[u64]| -> anyhow::Result<()> {
            let live: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| model.contains_key(id))
                .collect();
            let vectors: Vec<f32> = live.iter().flat_map(|id| model[id].0.clone()).collect();
            let payloads: Vec<_> = live.iter().map(|id| model[id].1.clone()).collect();
            c.upsert(&live, &vectors, &payloads)?;
            Ok(())
        };
        // Deleted ids get a placeholder first, so the deletion file has something to record.
        let placeholder = vec![0.5f32; cfg.dim];
        for id in &deleted {
            c.upsert(&[*id], &placeholder, &[])?;
        }
        write(&all)?;
        c.flush()?;
        c.delete(&deleted[..deleted.len() / 2])?;
        c.flush()?;
        c.delete(&deleted[deleted.len() / 2..])?;
        write(&all[all.len() * 9 / 10..])?;
    }
    db.close()?;
    Ok(())
}
