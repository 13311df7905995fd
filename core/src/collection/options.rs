//! Database options.

use std::time::Duration;

/// When an acknowledged write reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// fsync before `upsert`/`delete` returns (group commit shares one fsync among
    /// concurrent writers). An acknowledged write survives a crash or power loss.
    Always,
    /// fsync in the background at this interval: a crash may lose the writes of the
    /// last interval, never corrupt older ones.
    Batch(Duration),
    /// Never fsync the log (the OS writes it back eventually). Seals and close still sync.
    Off,
}

impl Durability {
    /// Parse `always`, `off`, or `batch` / `batch:<ms>` (default 100 ms).
    pub fn parse(s: &str) -> crate::Result<Durability> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "always" => Ok(Durability::Always),
            "off" | "none" => Ok(Durability::Off),
            "batch" => Ok(Durability::Batch(Duration::from_millis(100))),
            _ => s
                .strip_prefix("batch:")
                .or_else(|| s.strip_prefix("batch("))
                .map(|r| r.trim_end_matches(')').trim_end_matches("ms"))
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(|ms| Durability::Batch(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    crate::Error::invalid(
                        "durability",
                        format!("unknown durability `{s}`; expected always, batch:<ms> or off"),
                    )
                }),
        }
    }
}

/// Options for [`crate::Database::open`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbOptions {
    /// When writes become durable. Default: [`Durability::Always`].
    pub durability: Durability,
    /// The appendable segment is sealed into a segment file once it holds this many rows.
    /// Default 100,000.
    pub seal_threshold_rows: usize,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            durability: Durability::Always,
            seal_threshold_rows: 100_000,
        }
    }
}

impl DbOptions {
    /// Set the durability.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Set the seal threshold (rows, at least 1).
    #[must_use]
    pub fn seal_threshold_rows(mut self, rows: usize) -> Self {
        self.seal_threshold_rows = rows.max(1);
        self
    }
}
