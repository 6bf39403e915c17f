//! GetFlows' experimental field mask: a client asks for only some fields of
//! each flow (`time`, `source.pod_name`, `l4.TCP.destination_port`), and the
//! rest are left out, as Hubble does.
//!
//! Paths use proto field names and are checked against the Flow message when
//! the request arrives, so a typo is an error, not an empty flow. Masking
//! goes through prost-reflect's dynamic messages: generic over every field of
//! Flow, and only paid by clients that ask for a mask.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage as _, Value};

use crate::proto::{descriptor_pool, flow::Flow};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldMaskError {
    #[error("field mask path {path:?}: {message} has no field {field:?}")]
    UnknownField {
        path: String,
        message: String,
        field: String,
    },
    #[error("field mask path {path:?}: {field:?} is not a message, it has no fields")]
    NotAMessage { path: String, field: String },
}

/// A compiled mask over Flow.
#[derive(Debug, Clone)]
pub struct FieldMask {
    root: Selection,
}

/// Which fields of one message to keep: all of it, or some of its fields.
#[derive(Debug, Clone, Default)]
struct Selection {
    whole: bool,
    fields: BTreeMap<u32, (FieldDescriptor, Selection)>,
}

fn flow_descriptor() -> MessageDescriptor {
    descriptor_pool()
        .get_message_by_name("flow.Flow")
        .expect("flow.Flow is in the descriptors")
}

impl FieldMask {
    /// `None` for an empty mask: Hubble returns whole flows then.
    pub fn new(paths: &[String]) -> Result<Option<FieldMask>, FieldMaskError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let mut root = Selection::default();
        for path in paths {
            root.add(flow_descriptor(), path)?;
        }
        Ok(Some(FieldMask { root }))
    }

    /// Whether the mask keeps the top-level field `name` (whole or in part).
    pub fn keeps(&self, name: &str) -> bool {
        self.root.whole || self.root.fields.values().any(|(field, _)| field.name() == name)
    }

    /// A copy of `flow` with only the masked fields.
    pub fn apply(&self, flow: &Flow) -> Flow {
        let full = DynamicMessage::decode(flow_descriptor(), flow.encode_to_vec().as_slice())
            .expect("a Flow decodes as flow.Flow");
        let masked = self.root.copy(&full);
        masked.transcode_to().expect("a masked flow.Flow decodes as Flow")
    }
}

impl Selection {
    fn add(&mut self, mut message: MessageDescriptor, path: &str) -> Result<(), FieldMaskError> {
        let mut selection = self;
        let mut parts = path.split('.').peekable();
        while let Some(name) = parts.next() {
            if selection.whole {
                // A parent is already kept whole.
                return Ok(());
            }
            let field = message
                .get_field_by_name(name)
                .ok_or_else(|| FieldMaskError::UnknownField {
                    path: path.to_owned(),
                    message: message.full_name().to_owned(),
                    field: name.to_owned(),
                })?;
            let next_message = match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => Some(m),
                _ => None,
            };
            let entry = selection
                .fields
                .entry(field.number())
                .or_insert_with(|| (field.clone(), Selection::default()));
            selection = &mut entry.1;
            if parts.peek().is_none() {
                selection.whole = true;
                selection.fields.clear();
                return Ok(());
            }
            message = next_message.ok_or_else(|| FieldMaskError::NotAMessage {
                path: path.to_owned(),
                field: name.to_owned(),
            })?;
        }
        Ok(())
    }

    fn copy(&self, from: &DynamicMessage) -> DynamicMessage {
        let mut to = DynamicMessage::new(from.descriptor());
        for (field, selection) in self.fields.values() {
            if !from.has_field(field) {
                continue;
            }
            let value = from.get_field(field);
            if selection.whole {
                to.set_field(field, value.into_owned());
            } else if let Value::Message(inner) = &*value {
                to.set_field(field, Value::Message(selection.copy(inner)));
            }
        }
        to
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::flow::{Endpoint, Ip, Layer4, Tcp, TcpFlags, layer4::Protocol};

    fn flow() -> Flow {
        Flow {
            uuid: "u".into(),
            node_name: "n".into(),
            verdict: 1,
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ip_version: 1,
                ..Default::default()
            }),
            source: Some(Endpoint {
                namespace: "ns".into(),
                pod_name: "a".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 1,
                    destination_port: 2,
                    flags: Some(TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            ..Default::default()
        }
    }

    fn masked(paths: &[&str]) -> Flow {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        FieldMask::new(&paths).unwrap().unwrap().apply(&flow())
    }

    #[test]
    fn keeps_only_the_listed_fields() {
        assert_eq!(
            masked(&["uuid", "IP.source"]),
            Flow {
                uuid: "u".into(),
                ip: Some(Ip {
                    source: "10.0.0.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        );
        // Into a oneof, and a whole message that also has a sub-path.
        let f = masked(&["l4.TCP.destination_port", "source", "source.pod_name"]);
        assert_eq!(f.source, flow().source);
        assert_eq!(
            f.l4.unwrap().protocol,
            Some(Protocol::Tcp(Tcp {
                destination_port: 2,
                ..Default::default()
            }))
        );
        assert_eq!((f.uuid.as_str(), f.verdict, f.ip), ("", 0, None));
        // A field that is not set stays unset.
        assert_eq!(masked(&["destination.pod_name"]), Flow::default());
    }

    #[test]
    fn bad_paths_are_errors() {
        let err = |p: &str| FieldMask::new(&[p.to_string()]).unwrap_err();
        assert!(matches!(err("sauce"), FieldMaskError::UnknownField { field, .. } if field == "sauce"));
        assert!(matches!(err("IP.src"), FieldMaskError::UnknownField { message, .. } if message == "flow.IP"));
        assert!(matches!(err("uuid.x"), FieldMaskError::NotAMessage { .. }));
        assert!(FieldMask::new(&[]).unwrap().is_none());
    }
}
