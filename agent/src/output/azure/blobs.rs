//! Azure's storage layout for flow logs: one blob per hour and network
//! interface, `PT1H.json`, holding one JSON document `{"records":[...]}`
//! that grows as records are appended (Azure appends one a minute; hubcap
//! one per write batch). The path follows the storage account's:
//! `resourceId=/HUBCAP/NODES/<NODE>/y=<YYYY>/m=<MM>/d=<DD>/h=<HH>/m=00/macAddress=<MAC>/PT1H.json`.
//! After every append the document is whole, so a reader may copy it at
//! any time.

use std::{
    fs::{self, OpenOptions},
    io::{self, Seek, SeekFrom, Write},
    path::PathBuf,
};

pub struct HourlyBlobs {
    root: PathBuf,
    node: String,
}

impl HourlyBlobs {
    /// The directory the blobs are written under.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Creates `root` now, so that an unwritable one fails before capture.
    pub fn open(root: PathBuf, node: &str) -> io::Result<HourlyBlobs> {
        fs::create_dir_all(&root)?;
        Ok(HourlyBlobs {
            root,
            node: node.to_uppercase(),
        })
    }

    /// The blob of the hour of `rfc3339` (`2026-12-04T00:25:57...Z`) for the
    /// interface with MAC `mac`.
    pub fn path(&self, rfc3339: &str, mac: &str) -> PathBuf {
        let (year, month, day, hour) = (&rfc3339[0..4], &rfc3339[5..7], &rfc3339[8..10], &rfc3339[11..13]);
        self.root
            .join(format!("resourceId=/HUBCAP/NODES/{}", self.node).trim_start_matches('/'))
            .join(format!(
                "y={year}/m={month}/d={day}/h={hour}/m=00/macAddress={mac}/PT1H.json"
            ))
    }

    /// Appends `record` (one JSON object) to its blob; returns the bytes
    /// written.
    pub fn append(&mut self, rfc3339: &str, mac: &str, record: &[u8]) -> io::Result<u64> {
        let path = self.path(rfc3339, mac);
        fs::create_dir_all(path.parent().expect("a directory"))?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        let mut out = Vec::with_capacity(record.len() + 16);
        if len < 2 {
            file.set_len(0)?;
            out.extend_from_slice(b"{\"records\":[");
        } else {
            // Over the closing `]}`.
            file.seek(SeekFrom::Start(len - 2))?;
            out.push(b',');
        }
        out.extend_from_slice(record);
        out.extend_from_slice(b"]}");
        file.write_all(&out)?;
        Ok(out.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_append_leaves_a_whole_document_in_the_hour_s_blob() {
        let root = std::env::temp_dir().join(format!("hubcap-blobs-{}", std::process::id()));
        let mut blobs = HourlyBlobs::open(root.clone(), "node-a").unwrap();
        let time = "2026-12-04T00:25:57.123Z";
        for n in 0..3 {
            blobs
                .append(time, "0022AABBCCDD", format!("{{\"n\":{n}}}").as_bytes())
                .unwrap();
            let text = fs::read_to_string(blobs.path(time, "0022AABBCCDD")).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(doc["records"].as_array().unwrap().len(), n + 1);
        }
        let path = blobs.path(time, "0022AABBCCDD");
        assert!(
            path.ends_with(
                "resourceId=/HUBCAP/NODES/NODE-A/y=2026/m=12/d=04/h=00/m=00/macAddress=0022AABBCCDD/PT1H.json"
                    .trim_start_matches('/')
            )
        );
        blobs.append("2026-12-04T01:00:00Z", "0022AABBCCDD", b"{}").unwrap();
        assert!(
            blobs
                .path("2026-12-04T01:00:00Z", "0022AABBCCDD")
                .to_string_lossy()
                .contains("/h=01/")
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
