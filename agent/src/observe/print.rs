//! `hubcap observe`'s output: `compact` (one readable line per flow, like
//! `hubble observe`), `json` (Hubble JSON lines, exactly what the exporter
//! writes, so they can be read back with --input-file) and `table`.

// `Summary` is deprecated in Hubble's proto but is what its compact output shows.
#![allow(deprecated)]

use std::io::Write;

use prost_types::Timestamp;

use super::args::OutputFormat;
use crate::{
    hubble::civil_from_days,
    json::{Counts, ExportPayload, write_export_event},
    proto::{
        flow::{DropReason, Flow, LostEvent, LostEventSource, TraceObservationPoint, Verdict},
        observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    },
    record::RecordCounts,
};

pub struct Printer<W: Write> {
    out: W,
    format: OutputFormat,
    print_node_name: bool,
    /// Table rows are aligned to the widest cell seen so far; without
    /// `streaming` they are held until the end and aligned all at once.
    streaming: bool,
    rows: Vec<Vec<String>>,
    widths: Vec<usize>,
    header_done: bool,
    line: Vec<u8>,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 22 13:46:37.123`, in UTC (Hubble's StampMilli).
pub fn stamp(t: &Timestamp) -> String {
    let (_, month, day) = civil_from_days(t.seconds.div_euclid(86_400));
    let s = t.seconds.rem_euclid(86_400);
    format!(
        "{} {day:>2} {:02}:{:02}:{:02}.{:03}",
        MONTHS[month as usize - 1],
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.nanos / 1_000_000
    )
}

/// `10.0.0.1:80`, `[fd00::1]:80`, `ns/pod:80`, or without a port.
fn endpoint(flow: &Flow, source: bool) -> String {
    let ep = if source { &flow.source } else { &flow.destination };
    let ip = flow
        .ip
        .as_ref()
        .map_or("", |ip| if source { &ip.source } else { &ip.destination });
    let host = match ep.as_ref().filter(|e| !e.pod_name.is_empty()) {
        Some(e) => format!("{}/{}", e.namespace, e.pod_name),
        None if ip.contains(':') => format!("[{ip}]"),
        None => ip.to_owned(),
    };
    let ports = flow.l4_parts().ports;
    match ports {
        Some((s, d)) => format!("{host}:{}", if source { s } else { d }),
        None if ip.contains(':') => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => host,
    }
}

/// Source, arrow and destination as Hubble shows them: a reply is shown
/// from its destination's side, with `<-`; unknown direction is `<>`.
fn route(flow: &Flow) -> (String, &'static str, String) {
    let (src, dst) = (endpoint(flow, true), endpoint(flow, false));
    match flow.is_reply {
        None => (src, "<>", dst),
        Some(false) => (src, "->", dst),
        Some(true) => (dst, "<-", src),
    }
}

/// `to-stack` for a trace point, `Policy denied` for a drop reason.
fn event_kind(flow: &Flow) -> String {
    if flow.verdict == Verdict::Dropped as i32 {
        let name = DropReason::try_from(flow.drop_reason_desc).map_or("DROP_REASON_UNKNOWN", |r| r.as_str_name());
        let mut words = name.replace('_', " ").to_lowercase();
        if let Some(first) = words.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        return words;
    }
    TraceObservationPoint::try_from(flow.trace_observation_point)
        .map_or("unknown", |p| p.as_str_name())
        .to_lowercase()
        .replace('_', "-")
}

fn verdict(flow: &Flow) -> &'static str {
    Verdict::try_from(flow.verdict).map_or("VERDICT_UNKNOWN", |v| v.as_str_name())
}

fn lost_source(lost: &LostEvent) -> &'static str {
    LostEventSource::try_from(lost.source).map_or("UNKNOWN_LOST_EVENT_SOURCE", |s| s.as_str_name())
}

/// hubcap's counts, from a flow's `extensions`.
fn counts(flow: &Flow) -> Option<RecordCounts> {
    flow.extensions.as_ref().and_then(RecordCounts::from_extensions)
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: OutputFormat, print_node_name: bool, streaming: bool) -> Self {
        Printer {
            out,
            format,
            print_node_name,
            streaming,
            rows: Vec::new(),
            widths: Vec::new(),
            header_done: false,
            line: Vec::new(),
        }
    }

    pub fn print(&mut self, response: &GetFlowsResponse) -> std::io::Result<()> {
        let time = response.time.unwrap_or_default();
        match self.format {
            OutputFormat::Json => {
                self.line.clear();
                let flow_counts;
                let payload = match &response.response_types {
                    Some(ResponseTypes::Flow(flow)) => {
                        // The JSON writer writes `extensions` from these.
                        flow_counts = counts(flow);
                        ExportPayload::Flow(flow, flow_counts.as_ref().map(Counts::Record))
                    }
                    Some(ResponseTypes::LostEvents(lost)) => ExportPayload::LostEvents(lost),
                    _ => return Ok(()),
                };
                write_export_event(&mut self.line, payload, &response.node_name, &time);
                self.out.write_all(&self.line)?;
            }
            OutputFormat::Compact => {
                let node = if self.print_node_name {
                    format!(" [{}]", response.node_name)
                } else {
                    String::new()
                };
                match &response.response_types {
                    Some(ResponseTypes::Flow(flow)) => {
                        let (src, arrow, dst) = route(flow);
                        let counts = counts(flow)
                            .map(|c| format!(" {} packets, {} bytes", c.packets, c.bytes))
                            .unwrap_or_default();
                        writeln!(
                            self.out,
                            "{}{node}: {src} {arrow} {dst} {} {} ({}){counts}",
                            stamp(&time),
                            event_kind(flow),
                            verdict(flow),
                            flow.summary
                        )?;
                    }
                    Some(ResponseTypes::LostEvents(lost)) => writeln!(
                        self.out,
                        "{}{node}: EVENTS LOST: {} {}",
                        stamp(&time),
                        lost_source(lost),
                        lost.num_events_lost
                    )?,
                    _ => {}
                }
            }
            OutputFormat::Table => {
                let mut row = vec![stamp(&time)];
                if self.print_node_name {
                    row.push(response.node_name.clone());
                }
                match &response.response_types {
                    Some(ResponseTypes::Flow(flow)) => {
                        let (src, _, dst) = route(flow);
                        let counts = counts(flow);
                        row.extend([
                            src,
                            dst,
                            event_kind(flow),
                            verdict(flow).to_owned(),
                            counts.as_ref().map_or(String::new(), |c| c.packets.to_string()),
                            counts.as_ref().map_or(String::new(), |c| c.bytes.to_string()),
                            flow.summary.clone(),
                        ]);
                    }
                    Some(ResponseTypes::LostEvents(lost)) => row.extend([
                        String::new(),
                        String::new(),
                        "events-lost".to_owned(),
                        String::new(),
                        String::new(),
                        String::new(),
                        format!("{} events lost ({})", lost.num_events_lost, lost_source(lost)),
                    ]),
                    _ => return Ok(()),
                }
                self.table_row(row)?;
            }
        }
        if self.streaming {
            self.out.flush()?;
        }
        Ok(())
    }

    fn table_row(&mut self, row: Vec<String>) -> std::io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            let mut header = vec!["TIMESTAMP"];
            if self.print_node_name {
                header.push("NODE");
            }
            header.extend([
                "SOURCE",
                "DESTINATION",
                "TYPE",
                "VERDICT",
                "PACKETS",
                "BYTES",
                "SUMMARY",
            ]);
            self.table_row(header.into_iter().map(str::to_owned).collect())?;
        }
        self.widths.resize(row.len(), 0);
        for (w, cell) in self.widths.iter_mut().zip(&row) {
            *w = (*w).max(cell.len());
        }
        if self.streaming {
            self.write_row(&row)
        } else {
            self.rows.push(row);
            Ok(())
        }
    }

    fn write_row(&mut self, row: &[String]) -> std::io::Result<()> {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                writeln!(self.out, "{cell}")?;
            } else {
                write!(self.out, "{cell:<width$}   ", width = self.widths[i])?;
            }
        }
        Ok(())
    }

    /// Writes what was held back (an aligned table) and flushes.
    pub fn finish(mut self) -> std::io::Result<()> {
        for row in std::mem::take(&mut self.rows) {
            self.write_row(&row)?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow_table::FlowState,
        proto::flow::{Ip, Layer4, Tcp, layer4::Protocol},
        record::FlowRecord,
    };

    fn response(reply: Option<bool>) -> GetFlowsResponse {
        let record = FlowRecord {
            flow: Flow {
                time: Some(Timestamp {
                    seconds: 1_795_362_397,
                    nanos: 123_456_789,
                }),
                verdict: Verdict::Forwarded as i32,
                ip: Some(Ip {
                    source: "10.0.0.1".into(),
                    destination: "10.0.0.2".into(),
                    ..Default::default()
                }),
                l4: Some(Layer4 {
                    protocol: Some(Protocol::Tcp(Tcp {
                        source_port: 43210,
                        destination_port: 80,
                        flags: None,
                    })),
                }),
                trace_observation_point: TraceObservationPoint::ToStack as i32,
                is_reply: reply,
                summary: "TCP Flags: SYN".into(),
                node_name: "node-1".into(),
                ..Default::default()
            },
            counts: RecordCounts {
                packets: 3,
                bytes: 222,
                state: FlowState::Begin,
                flow_start_time: Timestamp::default(),
                kernel_drop_reason: None,
            },
        };
        GetFlowsResponse {
            time: record.flow.time,
            node_name: "node-1".into(),
            response_types: Some(ResponseTypes::Flow(record.to_proto())),
        }
    }

    fn printed(format: OutputFormat, responses: &[GetFlowsResponse]) -> String {
        let mut out = Vec::new();
        let mut p = Printer::new(&mut out, format, false, false);
        for r in responses {
            p.print(r).unwrap();
        }
        p.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn compact_lines() {
        let lost = GetFlowsResponse {
            time: Some(Timestamp::default()),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::HubbleRingBuffer as i32,
                num_events_lost: 9,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            printed(
                OutputFormat::Compact,
                &[response(Some(false)), response(Some(true)), lost]
            ),
            "Nov 22 15:46:37.123: 10.0.0.1:43210 -> 10.0.0.2:80 to-stack FORWARDED (TCP Flags: SYN) 3 packets, 222 bytes\n\
             Nov 22 15:46:37.123: 10.0.0.2:80 <- 10.0.0.1:43210 to-stack FORWARDED (TCP Flags: SYN) 3 packets, 222 bytes\n\
             Jan  1 00:00:00.000: EVENTS LOST: HUBBLE_RING_BUFFER 9\n"
        );
    }

    #[test]
    fn json_lines_read_back_to_the_same_response() {
        let original = response(None);
        let line = printed(OutputFormat::Json, std::slice::from_ref(&original));
        let decoded = super::super::source::decode_line(line.trim_end()).unwrap().unwrap();
        // Struct's map may encode in any order: compare flows and counts.
        let split = |r: &GetFlowsResponse| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => {
                let without = Flow {
                    extensions: None,
                    ..f.clone()
                };
                (without, counts(f))
            }
            _ => panic!("a flow"),
        };
        assert_eq!(split(&decoded), split(&original));
        assert!(split(&decoded).1.is_some());
        assert_eq!((&decoded.node_name, decoded.time), (&original.node_name, original.time));
    }

    #[test]
    fn table_is_aligned() {
        let table = printed(OutputFormat::Table, &[response(None)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("TIMESTAMP"));
        let column = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(column(lines[0], "SOURCE"), column(lines[1], "10.0.0.1:43210"));
        assert_eq!(column(lines[0], "BYTES"), column(lines[1], "222"));
    }
}
