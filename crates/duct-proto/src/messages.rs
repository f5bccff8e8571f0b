//! Riemann's protobuf messages (proto2), field numbers as in Riemann's
//! `proto.proto` (see docs/riemann.md, "Wire format"). Written as `prost` derives so that no `protoc`
//! is needed to build; every field is optional, as in proto2, so that an
//! absent field and an empty one stay apart on decode.

/// One message on the wire: events from a client, or an answer (`ok`,
/// `error`) from a server.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(bool, optional, tag = "2")]
    pub ok: Option<bool>,
    #[prost(string, optional, tag = "3")]
    pub error: Option<String>,
    #[prost(message, repeated, tag = "4")]
    pub states: Vec<State>,
    #[prost(message, optional, tag = "5")]
    pub query: Option<Query>,
    #[prost(message, repeated, tag = "6")]
    pub events: Vec<Event>,
}

impl Msg {
    /// The answer to a message that was accepted.
    pub fn accepted() -> Msg {
        Msg {
            ok: Some(true),
            ..Msg::default()
        }
    }

    /// The answer to a message that was refused, with the reason.
    pub fn refused(reason: impl Into<String>) -> Msg {
        Msg {
            ok: Some(false),
            error: Some(reason.into()),
            ..Msg::default()
        }
    }
}

/// A Riemann event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the epoch.
    #[prost(int64, optional, tag = "1")]
    pub time: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub state: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub service: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub host: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub description: Option<String>,
    #[prost(string, repeated, tag = "7")]
    pub tags: Vec<String>,
    #[prost(float, optional, tag = "8")]
    pub ttl: Option<f32>,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<Attribute>,
    /// Microseconds since the epoch; preferred over `time` when present.
    #[prost(int64, optional, tag = "10")]
    pub time_micros: Option<i64>,
    #[prost(sint64, optional, tag = "13")]
    pub metric_sint64: Option<i64>,
    #[prost(double, optional, tag = "14")]
    pub metric_d: Option<f64>,
    #[prost(float, optional, tag = "15")]
    pub metric_f: Option<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Attribute {
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// A query (Riemann's index search); ductd's listener answers it with an
/// error, having no index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    #[prost(string, optional, tag = "1")]
    pub string: Option<String>,
}

/// Riemann's older state message, kept so that such messages decode.
#[derive(Clone, PartialEq, prost::Message)]
pub struct State {
    #[prost(int64, optional, tag = "1")]
    pub time: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub state: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub service: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub host: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub description: Option<String>,
    #[prost(bool, optional, tag = "6")]
    pub once: Option<bool>,
    #[prost(string, repeated, tag = "7")]
    pub tags: Vec<String>,
    #[prost(float, optional, tag = "8")]
    pub ttl: Option<f32>,
}
