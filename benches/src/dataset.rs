//! Dataset readers: TEXMEX directories (`base.fvecs`, `query.fvecs`, `groundtruth.ivecs`,
//! optional `groundtruth_dist.fvecs`, `metadata.jsonl`, `info.json`), `.npy` files, and
//! writers for the same formats (used to cache synthetic datasets).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use trovedb::Metric;

/// Vectors and exact neighbours of one benchmark dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Display name.
    pub name: String,
    /// Dimension.
    pub dim: usize,
    /// Metric the ground truth was computed with.
    pub metric: Metric,
    /// Base vectors, row-major.
    pub base: Vec<f32>,
    /// Query vectors, row-major.
    pub queries: Vec<f32>,
    /// Exact neighbours per query (row numbers of `base`), nearest first.
    pub gt: Vec<Vec<u32>>,
    /// Distances matching `gt`, when known (used to count ties as hits).
    pub gt_dist: Option<Vec<Vec<f32>>>,
    /// One JSON object per base row, when the dataset has metadata.
    pub metadata: Option<Vec<serde_json::Value>>,
    /// Where it was loaded from.
    pub path: Option<PathBuf>,
}

impl Dataset {
    /// Number of base vectors.
    pub fn n(&self) -> usize {
        self.base.len() / self.dim
    }
    /// Number of queries.
    pub fn nq(&self) -> usize {
        self.queries.len() / self.dim
    }
    /// Query `i`.
    pub fn query(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }
    /// Keep only the first `n` queries.
    pub fn limit_queries(&mut self, n: usize) {
        let n = n.min(self.nq());
        self.queries.truncate(n * self.dim);
        self.gt.truncate(n);
        if let Some(d) = &mut self.gt_dist {
            d.truncate(n);
        }
    }
}

fn read_records(path: &Path, elem: usize) -> Result<(usize, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(bytes.len() >= 4, "{}: file is empty", path.display());
    let dim = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    ensure!(
        dim > 0 && dim <= 1 << 20,
        "{}: bad dimension {dim} in the first record",
        path.display()
    );
    let rec = 4 + elem * dim;
    ensure!(
        bytes.len() % rec == 0,
        "{}: {} bytes is not a whole number of {rec}-byte records (truncated file?)",
        path.display(),
        bytes.len()
    );
    let mut out = Vec::with_capacity(bytes.len() / rec * dim * elem);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let d = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
        ensure!(
            d == dim,
            "{}: record {i} has dimension {d}, expected {dim}",
            path.display()
        );
        out.extend_from_slice(&r[4..]);
    }
    Ok((dim, out))
}

/// Read a `.fvecs` file: `(dim, row-major floats)`.
pub fn read_fvecs(path: &Path) -> Result<(usize, Vec<f32>)> {
    let (dim, raw) = read_records(path, 4)?;
    Ok((
        dim,
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

/// Read an `.ivecs` file as rows.
pub fn read_ivecs(path: &Path) -> Result<Vec<Vec<u32>>> {
    let (dim, raw) = read_records(path, 4)?;
    let flat: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(flat.chunks_exact(dim).map(<[u32]>::to_vec).collect())
}

fn write_records(path: &Path, dim: usize, words: impl Iterator<Item = [u8; 4]>) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for (i, word) in words.enumerate() {
        if i % dim == 0 {
            w.write_all(&(dim as u32).to_le_bytes())?;
        }
        w.write_all(&word)?;
    }
    w.flush()?;
    Ok(())
}

/// Write row-major floats as `.fvecs`.
pub fn write_fvecs(path: &Path, dim: usize, data: &[f32]) -> Result<()> {
    write_records(path, dim, data.iter().map(|x| x.to_le_bytes()))
}

/// Write equal-length rows as `.ivecs`.
pub fn write_ivecs(path: &Path, rows: &[Vec<u32>]) -> Result<()> {
    let dim = rows.first().map_or(1, Vec::len);
    ensure!(
        rows.iter().all(|r| r.len() == dim),
        "ivecs rows must have equal length"
    );
    write_records(path, dim, rows.iter().flatten().map(|x| x.to_le_bytes()))
}

/// Read a 2-D little-endian `float32` (`<f4`) or `int32` (`<i4`) C-order `.npy` file as
/// `(rows, cols, f32 values)`; int32 is converted.
pub fn read_npy(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "{}: truncated header", path.display());
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("{}: unsupported .npy version {v}", path.display()),
    };
    ensure!(
        bytes.len() >= start + hlen,
        "{}: truncated header",
        path.display()
    );
    let header = std::str::from_utf8(&bytes[start..start + hlen])?;
    let descr = if header.contains("'<f4'") {
        "f4"
    } else if header.contains("'<i4'") {
        "i4"
    } else {
        bail!(
            "{}: only <f4 and <i4 arrays are supported, header: {header}",
            path.display()
        )
    };
    ensure!(
        header.contains("'fortran_order': False"),
        "{}: Fortran order is not supported",
        path.display()
    );
    let shape_s = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .with_context(|| format!("{}: no shape in header", path.display()))?;
    let dims: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: bad shape `{shape_s}`", path.display()))?;
    let (rows, cols) = match dims.as_slice() {
        [r, c] => (*r, *c),
        [r] => (*r, 1),
        _ => bail!(
            "{}: expected a 2-D array, shape ({shape_s})",
            path.display()
        ),
    };
    let data = &bytes[start + hlen..];
    ensure!(
        data.len() == rows * cols * 4,
        "{}: {} data bytes for shape ({rows}, {cols}) (truncated file?)",
        path.display(),
        data.len()
    );
    let vals = data
        .chunks_exact(4)
        .map(|c| {
            let b = [c[0], c[1], c[2], c[3]];
            if descr == "f4" {
                f32::from_le_bytes(b)
            } else {
                i32::from_le_bytes(b) as f32
            }
        })
        .collect();
    Ok((rows, cols, vals))
}

/// Write a 2-D `<f4` `.npy` file.
pub fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    ensure!(data.len() == rows * cols, "shape does not match the data");
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Load a TEXMEX directory. The metric comes from `info.json` when present, else `metric`.
pub fn load_texmex(dir: &Path, metric: Option<Metric>, query_set: &str) -> Result<Dataset> {
    let info: Option<serde_json::Value> = std::fs::read(dir.join("info.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let metric = match (metric, info.as_ref().and_then(|i| i["metric"].as_str())) {
        (Some(m), _) => m,
        (None, Some(m)) => Metric::parse(m)?,
        (None, None) => bail!("{}: no info.json; pass --metric", dir.display()),
    };
    let prefix = if query_set == "main" {
        String::new()
    } else {
        format!("{query_set}_")
    };
    let (dim, base) = read_fvecs(&dir.join("base.fvecs"))?;
    let (qdim, queries) = read_fvecs(&dir.join(format!("{prefix}query.fvecs")))?;
    ensure!(qdim == dim, "queries have dim {qdim}, base has {dim}");
    let gt = read_ivecs(&dir.join(format!("{prefix}groundtruth.ivecs")))?;
    ensure!(
        gt.len() == queries.len() / dim,
        "ground truth has {} rows for {} queries",
        gt.len(),
        queries.len() / dim
    );
    let gt_dist = match read_fvecs(&dir.join(format!("{prefix}groundtruth_dist.fvecs"))) {
        Ok((_, d)) => {
            let k = gt.first().map_or(0, Vec::len);
            Some(d.chunks_exact(k.max(1)).map(<[f32]>::to_vec).collect())
        }
        Err(_) => None,
    };
    let metadata = match std::fs::File::open(dir.join("metadata.jsonl")) {
        Ok(f) => Some(
            std::io::BufReader::new(f)
                .lines()
                .map(|l| Ok(serde_json::from_str(&l?)?))
                .collect::<Result<Vec<_>>>()?,
        ),
        Err(_) => None,
    };
    let name = dir
        .file_name()
        .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned());
    Ok(Dataset {
        name,
        dim,
        metric,
        base,
        queries,
        gt,
        gt_dist,
        metadata,
        path: Some(dir.to_path_buf()),
    })
}

/// Save a dataset as a TEXMEX directory (`info.json` records the metric).
pub fn save_texmex(ds: &Dataset, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_fvecs(&dir.join("base.fvecs"), ds.dim, &ds.base)?;
    write_fvecs(&dir.join("query.fvecs"), ds.dim, &ds.queries)?;
    write_ivecs(&dir.join("groundtruth.ivecs"), &ds.gt)?;
    if let Some(d) = &ds.gt_dist {
        let k = d.first().map_or(1, Vec::len);
        write_fvecs(&dir.join("groundtruth_dist.fvecs"), k, &d.concat())?;
    }
    let info = serde_json::json!({
        "name": ds.name, "dim": ds.dim, "metric": ds.metric.name(),
        "n_base": ds.n(), "n_query": ds.nq(), "k": ds.gt.first().map_or(0, Vec::len),
    });
    std::fs::write(dir.join("info.json"), serde_json::to_vec_pretty(&info)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fvecs_ivecs_npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        write_fvecs(&dir.path().join("a.fvecs"), 4, &data).unwrap();
        assert_eq!(
            read_fvecs(&dir.path().join("a.fvecs")).unwrap(),
            (4, data.clone())
        );
        let rows = vec![vec![1, 2, 3], vec![4, 5, 6]];
        write_ivecs(&dir.path().join("a.ivecs"), &rows).unwrap();
        assert_eq!(read_ivecs(&dir.path().join("a.ivecs")).unwrap(), rows);
        write_npy(&dir.path().join("a.npy"), 3, 4, &data).unwrap();
        assert_eq!(read_npy(&dir.path().join("a.npy")).unwrap(), (3, 4, data));
    }

    #[test]
    fn truncated_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.fvecs");
        write_fvecs(&p, 4, &[1.0; 8]).unwrap();
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 3]).unwrap();
        let e = read_fvecs(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let n = dir.path().join("t.npy");
        write_npy(&n, 2, 2, &[1.0; 4]).unwrap();
        let b = std::fs::read(&n).unwrap();
        std::fs::write(&n, &b[..b.len() - 1]).unwrap();
        assert!(read_npy(&n).unwrap_err().to_string().contains("truncated"));
        std::fs::write(&n, b"garbage").unwrap();
        assert!(read_npy(&n).is_err());
    }
}
