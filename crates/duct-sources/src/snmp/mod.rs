//! SNMP sources under Duct's names: `duct.sources.snmp.SNMP`, the IF-MIB
//! interface table of a device, polled over SNMP v1, v2c or v3 (authPriv,
//! [`v3`]); `SNMPCisco837` (plus ADSL-LINE-MIB) and
//! `power.raritan_px.RaritanPX` ([`raritan_px`]) use the same session.
//!
//! Messages are made and read by [`ber`] (pure functions, tested on
//! datagrams captured from net-snmp's snmpd); every SNMP source of the
//! process shares one UDP socket per address family ([`client`]), so one
//! ductd can poll a whole site's switches.
//!
//! A tick walks the interface table: `ifDescr` and Duct's ten counters
//! from `ifTable`, and, over v2c, the 64-bit `ifXTable` counters, all in
//! one column-wise walk (GetBulk over v2c, GetNext over v1). Where the
//! agent has an `ifHC*` counter for an interface, it is sent instead of
//! the 32-bit one under the same name (`ifInNUcastPkts` as the sum of
//! `ifHCInMulticastPkts` and `ifHCInBroadcastPkts`). Counters carry their
//! aggregation (`Counter32` or `Counter64`), which the router turns into
//! a rate per second, wrap included, as Duct's aggregators did.
//!
//! Faults (no answer, a wrong community — which agents answer with
//! silence —, an error status, garbage): one critical event on the
//! service, without a metric, naming the cause; the agent carries on.

pub mod ber;
pub mod client;
pub mod raritan_px;
pub mod v3;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Aggregation, Event, Poll, Registry, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use ber::{decode_message, encode_request, error_name, Oid, Pdu, RequestKind, Value, Version};
use client::ExchangeError;

use crate::network::GRACE;
use crate::services::{budget, host_option, port_option, Faults};

/// Adds the SNMP sources to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(spec());
    registry.add_source(cisco837_spec());
    registry.add_source(raritan_px::spec());
}

/// Duct's (pysnmp's) wait for each try, and its number of retries.
const DEFAULT_REQUEST_TIMEOUT: f64 = 5.0;
const DEFAULT_RETRIES: i64 = 2;
/// The whole walk's budget when the block sets no `timeout` (capped at
/// 90 % of the interval).
const DEFAULT_TIMEOUT: f64 = 30.0;
/// Rows of each column asked per GetBulk.
const MAX_REPETITIONS: u32 = 10;
/// A walk that brings more variables than this is stopped (a table that
/// never ends, or an agent that loops).
const MAX_VARIABLES: usize = 200_000;

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct Options {
    ip: String,
    port: i64,
    community: String,
    /// `1` or `2c`.
    version: serde_json::Value,
    retries: i64,
    /// Seconds to wait for each try.
    request_timeout: f64,
    /// Seconds the whole walk may take (also the common option).
    timeout: Option<f64>,
    /// SNMPv3 (authPriv): the user, and SHA / AES with their passwords.
    username: Option<String>,
    auth_protocol: String,
    auth_password: Option<String>,
    priv_protocol: String,
    priv_password: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ip: "127.0.0.1".into(),
            port: 161,
            community: "public".into(),
            version: serde_json::Value::String("2c".into()),
            retries: DEFAULT_RETRIES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            timeout: None,
            username: None,
            auth_protocol: "SHA".into(),
            auth_password: None,
            priv_protocol: "AES".into(),
            priv_password: None,
        }
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.snmp.SNMP",
        "The IF-MIB interface table of an SNMP agent: `ip` (127.0.0.1), `port` (161), `community` (public), \
         `version` (2c, 1, or 3 with `username`, `auth_password`, `priv_password`: authPriv SHA/AES), `retries` (2), \
         `request_timeout` (5 s a try), `timeout` (the whole walk)",
        &[
            "(service).(ifDescr).(ifInOctets, ifInUcastPkts, ifInNUcastPkts, ifInErrors, ifInDiscards, ifOutOctets, \
             ifOutUcastPkts, ifOutNUcastPkts, ifOutErrors, ifOutDiscards): rates per second (Counter32, or Counter64 \
             from the ifHC* counters where the agent has them)",
            "(service): critical with no metric when the agent does not answer or answers an error",
        ],
        build,
    )
}

/// How to reach an agent.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub host: String,
    pub port: u16,
    pub version: Version,
    pub community: Vec<u8>,
    pub request_timeout: Duration,
    pub retries: u32,
    /// SNMPv3 (the PDUs are v2c's then).
    pub v3: Option<std::sync::Arc<v3::User>>,
}

/// The SNMP options' names followed by `extra`, made once into `cell`:
/// the option list of a source that takes SNMP's options and a few more.
pub(crate) fn option_names_with(
    cell: &'static std::sync::OnceLock<Vec<&'static str>>,
    extra: &[&'static str],
) -> &'static [&'static str] {
    cell.get_or_init(|| {
        let mut names = duct_core::config::field_names::<Options>().to_vec();
        names.extend_from_slice(extra);
        names
    })
}

pub(crate) fn session(args: &SourceArgs<'_>) -> Result<(Session, Duration), Diagnostic> {
    let o: Options = args.options()?;
    let mut v3_user = None;
    let version = match &o.version {
        serde_json::Value::String(s) if matches!(s.trim(), "3" | "v3") => {
            v3_user = Some(v3_options(args, &o)?);
            Version::V2c
        }
        serde_json::Value::Number(n) if n.as_i64() == Some(3) => {
            v3_user = Some(v3_options(args, &o)?);
            Version::V2c
        }
        serde_json::Value::String(s) if matches!(s.trim(), "2c" | "2" | "v2c") => Version::V2c,
        serde_json::Value::String(s) if matches!(s.trim(), "1" | "v1") => Version::V1,
        serde_json::Value::Number(n) if n.as_i64() == Some(1) => Version::V1,
        serde_json::Value::Number(n) if n.as_i64() == Some(2) => Version::V2c,
        other => return Err(args.invalid("version", format!("`{other}` is not an SNMP version (1, 2c or 3)"))),
    };
    if !(0..=10).contains(&o.retries) {
        return Err(args.invalid("retries", "must be 0 to 10"));
    }
    if !(o.request_timeout.is_finite() && o.request_timeout > 0.0 && o.request_timeout <= 300.0) {
        return Err(args.invalid("request_timeout", "must be more than 0 and at most 300 seconds"));
    }
    let session = Session {
        host: host_option(args, o.ip).map_err(|_| args.invalid("ip", "must name a host or an address"))?,
        port: port_option(args, o.port)?,
        version,
        community: o.community.into_bytes(),
        request_timeout: Duration::from_secs_f64(o.request_timeout),
        retries: o.retries as u32,
        v3: v3_user.map(std::sync::Arc::new),
    };
    Ok((session, budget(args, DEFAULT_TIMEOUT)))
}

/// The v3 user of a `version: 3` block.
fn v3_options(args: &SourceArgs<'_>, o: &Options) -> Result<v3::User, Diagnostic> {
    let name = o
        .username
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| args.invalid("username", "SNMPv3 needs a `username`"))?;
    if !o.auth_protocol.eq_ignore_ascii_case("SHA") {
        return Err(args.invalid("auth_protocol", "only SHA (HMAC-SHA-96) is supported"));
    }
    if !o.priv_protocol.eq_ignore_ascii_case("AES") {
        return Err(args.invalid("priv_protocol", "only AES (AES-128-CFB) is supported"));
    }
    let auth = o
        .auth_password
        .as_deref()
        .ok_or_else(|| args.invalid("auth_password", "SNMPv3 authPriv needs an `auth_password`"))?;
    let privacy = o
        .priv_password
        .as_deref()
        .ok_or_else(|| args.invalid("priv_password", "SNMPv3 authPriv needs a `priv_password`"))?;
    v3::User::new(name, auth, privacy).map_err(|e| args.invalid("auth_password", e))
}

pub fn cisco837_spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.snmp.SNMPCisco837",
        "SNMP's interface table plus the ADSL line (ADSL-LINE-MIB) of a Cisco 837 or any ADSL modem: the same \
         options as duct.sources.snmp.SNMP",
        &[
            "(service).(ifDescr).(counter): as duct.sources.snmp.SNMP",
            "(service).adsl.rxrate, adsl.txrate: downstream and upstream sync rates, bit/s",
            "(service).adsl.outpwr (dBm), adsl.attn (dB), adsl.margin (dB): the modem's (ATU-R's) line figures",
            "(service): critical with no metric when the agent does not answer or has no ADSL line",
        ],
        build_cisco837,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let (session, budget) = session(args)?;
    Ok(Box::new(Snmp {
        session,
        budget,
        adsl: false,
        faults: Faults::default(),
    }))
}

fn build_cisco837(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let (session, budget) = session(args)?;
    Ok(Box::new(Snmp {
        session,
        budget,
        adsl: true,
        faults: Faults::default(),
    }))
}

/// Why a tick got nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum SnmpError {
    #[error("{0}")]
    Exchange(#[from] ExchangeError),
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, String),
    #[error("invalid answer from {0}: {1}")]
    Garbage(SocketAddr, String),
    #[error("{addr} answered {status} (variable {index})")]
    Status {
        addr: SocketAddr,
        status: String,
        index: i64,
    },
    #[error("the walk took longer than {0:.1} s")]
    Timeout(f64),
}

impl Session {
    pub async fn resolve(&self) -> Result<SocketAddr, SnmpError> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| SnmpError::Resolve(self.host.clone(), e.to_string()))?
            .next()
            .ok_or_else(|| SnmpError::Resolve(self.host.clone(), "no address".into()))
    }

    /// One request and its Response PDU (error status not judged).
    pub async fn request(&self, addr: SocketAddr, kind: RequestKind, oids: &[Oid]) -> Result<Pdu, SnmpError> {
        if let Some(user) = &self.v3 {
            return v3::request(user, addr, kind, oids, self.request_timeout, self.retries).await;
        }
        let id = client::next_request_id();
        let message =
            encode_request(self.version, &self.community, kind, id, oids).map_err(|e| SnmpError::Garbage(addr, e))?;
        let bytes = client::exchange(addr, id, message, self.request_timeout, self.retries).await?;
        let m = decode_message(&bytes).map_err(|e| SnmpError::Garbage(addr, e.0))?;
        if m.pdu.tag != ber::RESPONSE {
            return Err(SnmpError::Garbage(
                addr,
                format!("PDU {:#04x} is not a Response", m.pdu.tag),
            ));
        }
        Ok(m.pdu)
    }

    /// Walks `columns` side by side; for each column, its rows as (the
    /// index after the column's OID, value), in order.
    pub async fn walk_columns(
        &self,
        addr: SocketAddr,
        columns: &[Oid],
    ) -> Result<Vec<Vec<(Vec<u32>, Value)>>, SnmpError> {
        let mut cursors: Vec<Option<Oid>> = columns.iter().cloned().map(Some).collect();
        let mut rows: Vec<Vec<(Vec<u32>, Value)>> = vec![Vec::new(); columns.len()];
        let mut total = 0usize;
        let mut repetitions = MAX_REPETITIONS;
        loop {
            let active: Vec<usize> = (0..columns.len()).filter(|i| cursors[*i].is_some()).collect();
            if active.is_empty() {
                return Ok(rows);
            }
            let oids: Vec<Oid> = active.iter().filter_map(|i| cursors[*i].clone()).collect();
            let kind = match self.version {
                Version::V1 => RequestKind::GetNext,
                Version::V2c => RequestKind::GetBulk {
                    non_repeaters: 0,
                    max_repetitions: repetitions,
                },
            };
            let pdu = self.request(addr, kind, &oids).await?;
            match (self.version, pdu.error_status) {
                (_, 0) => {}
                // v1's end of the MIB: the column at error-index is done.
                (Version::V1, 2) => {
                    let at = usize::try_from(pdu.error_index - 1).ok().and_then(|i| active.get(i));
                    match at {
                        Some(&col) => {
                            cursors[col] = None;
                            continue;
                        }
                        None => return Err(status(addr, &pdu)),
                    }
                }
                // tooBig: ask fewer rows at once.
                (Version::V2c, 1) if repetitions > 1 => {
                    repetitions /= 2;
                    continue;
                }
                _ => return Err(status(addr, &pdu)),
            }
            if pdu.varbinds.is_empty() {
                return Err(SnmpError::Garbage(addr, "a Response without variables".into()));
            }
            let mut done = vec![false; active.len()];
            for (i, (oid, value)) in pdu.varbinds.into_iter().enumerate() {
                let j = i % active.len();
                let col = active[j];
                if done[j] {
                    continue;
                }
                let under = oid.suffix(&columns[col]).map(<[u32]>::to_vec);
                match (under, value) {
                    (_, Value::EndOfMibView) | (None, _) => {
                        done[j] = true;
                        cursors[col] = None;
                    }
                    (Some(index), value) => {
                        if cursors[col].as_ref().is_some_and(|c| oid <= *c) {
                            return Err(SnmpError::Garbage(addr, format!("the walk went backwards at {oid}")));
                        }
                        rows[col].push((index, value));
                        cursors[col] = Some(oid);
                        total += 1;
                    }
                }
            }
            if total > MAX_VARIABLES {
                return Err(SnmpError::Garbage(
                    addr,
                    format!("more than {MAX_VARIABLES} variables in the walk"),
                ));
            }
        }
    }
}

fn status(addr: SocketAddr, pdu: &Pdu) -> SnmpError {
    SnmpError::Status {
        addr,
        status: error_name(pdu.error_status),
        index: pdu.error_index,
    }
}

/// IF-MIB's tables.
const IF_ENTRY: [u32; 9] = [1, 3, 6, 1, 2, 1, 2, 2, 1];
const IFX_ENTRY: [u32; 10] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1];
const IF_DESCR: u32 = 2;

/// Duct's metrics, in its order: the ifTable column, and the ifXTable
/// columns that replace it (summed) where the agent has them.
const COUNTERS: [(&str, u32, &[u32]); 10] = [
    ("ifInOctets", 10, &[6]),
    ("ifInUcastPkts", 11, &[7]),
    ("ifInNUcastPkts", 12, &[8, 9]),
    ("ifInErrors", 14, &[]),
    ("ifInDiscards", 13, &[]),
    ("ifOutOctets", 16, &[10]),
    ("ifOutUcastPkts", 17, &[11]),
    ("ifOutNUcastPkts", 18, &[12, 13]),
    ("ifOutErrors", 20, &[]),
    ("ifOutDiscards", 19, &[]),
];

/// The columns a walk asks, in order: ifDescr, the ten ifTable counters,
/// then (v2c) the ifXTable ones.
pub(crate) fn interface_columns(version: Version) -> Vec<Oid> {
    let entry = Oid(IF_ENTRY.to_vec());
    let mut cols = vec![entry.child(&[IF_DESCR])];
    cols.extend(COUNTERS.iter().map(|(_, c, _)| entry.child(&[*c])));
    if version == Version::V2c {
        let x = Oid(IFX_ENTRY.to_vec());
        let mut hc: Vec<u32> = COUNTERS.iter().flat_map(|(_, _, h)| h.iter().copied()).collect();
        hc.sort_unstable();
        cols.extend(hc.into_iter().map(|c| x.child(&[c])));
    }
    cols
}

/// One interface counter read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub interface: String,
    pub key: &'static str,
    pub value: Value,
}

/// The counters of every interface, from a walk of
/// [`interface_columns`] (the same order). Interfaces are in ifIndex
/// order; an interface without ifDescr is named by its index.
pub(crate) fn interface_readings(columns: &[Oid], rows: &[Vec<(Vec<u32>, Value)>]) -> Vec<Reading> {
    let by_column: BTreeMap<&Oid, BTreeMap<&[u32], &Value>> = columns
        .iter()
        .zip(rows)
        .map(|(c, r)| (c, r.iter().map(|(i, v)| (i.as_slice(), v)).collect()))
        .collect();
    let entry = Oid(IF_ENTRY.to_vec());
    let x = Oid(IFX_ENTRY.to_vec());
    let column = |oid: Oid| by_column.get(&oid);
    let descr = column(entry.child(&[IF_DESCR]));
    // Every index any column has, in order.
    let mut indexes: Vec<&[u32]> = by_column.values().flat_map(|m| m.keys().copied()).collect();
    indexes.sort_unstable();
    indexes.dedup();
    let mut out = Vec::new();
    for index in indexes {
        let name = descr
            .and_then(|d| d.get(index))
            .filter(|v| !v.is_exception())
            .map(|v| v.text())
            .unwrap_or_else(|| Oid(index.to_vec()).to_string().replace('.', "_"));
        for (key, plain, hc) in COUNTERS {
            let high: Option<Vec<u64>> = (!hc.is_empty())
                .then(|| {
                    hc.iter()
                        .map(|c| match column(x.child(&[*c])).and_then(|m| m.get(index)) {
                            Some(Value::Counter64(v)) => Some(*v),
                            _ => None,
                        })
                        .collect::<Option<Vec<u64>>>()
                })
                .flatten();
            let value = match high {
                Some(parts) => Some(Value::Counter64(parts.iter().fold(0u64, |a, b| a.wrapping_add(*b)))),
                None => column(entry.child(&[plain]))
                    .and_then(|m| m.get(index))
                    .filter(|v| v.as_i128().is_some())
                    .map(|v| (*v).clone()),
            };
            if let Some(value) = value {
                out.push(Reading {
                    interface: name.clone(),
                    key,
                    value,
                });
            }
        }
    }
    out
}

/// A reading as Duct's event: `(ifDescr).(key)`, with the counter's
/// aggregation.
pub(crate) fn reading_event(ctx: &SourceContext, r: &Reading) -> Event {
    let n = r.value.as_i128().unwrap_or_default();
    let description = format!("SNMP interface {} {}={n}", r.interface, r.key);
    let name = format!("{}.{}", r.interface, r.key);
    match r.value {
        Value::Counter32(v) => ctx
            .create_event_prefixed(&name, "ok", description, i64::from(v))
            .aggregated(Aggregation::Counter32),
        Value::Counter64(v) => ctx
            .create_event_prefixed(&name, "ok", description, v)
            .aggregated(Aggregation::Counter64),
        _ => ctx.create_event_prefixed(&name, "ok", description, n as f64),
    }
}

/// ADSL-LINE-MIB (RFC 2662): adslAtucChanCurrTxRate (the exchange's
/// transmit rate: downstream), adslAturChanCurrTxRate (upstream), and the
/// modem's (ATU-R's) adslAturCurrSnrMgn, adslAturCurrAtn and
/// adslAturCurrOutputPwr, in tenths of a dB.
const ADSL: [u32; 9] = [1, 3, 6, 1, 2, 1, 10, 94, 1];

pub(crate) fn adsl_columns() -> Vec<Oid> {
    let adsl = Oid(ADSL.to_vec());
    vec![
        adsl.child(&[1, 4, 1, 2]),
        adsl.child(&[1, 5, 1, 2]),
        adsl.child(&[1, 3, 1, 4]),
        adsl.child(&[1, 3, 1, 5]),
        adsl.child(&[1, 3, 1, 7]),
    ]
}

/// Duct's five ADSL figures from a walk of [`adsl_columns`]: the first
/// ADSL line's (Duct read ifIndex 15, the Cisco 837's). Each is (name,
/// description, value).
pub(crate) fn adsl_readings(rows: &[Vec<(Vec<u32>, Value)>]) -> Result<Vec<(&'static str, String, f64)>, String> {
    let first = |col: usize, what: &str| -> Result<f64, String> {
        rows.get(col)
            .and_then(|r| r.first())
            .and_then(|(_, v)| v.as_i128())
            .map(|v| v as f64)
            .ok_or_else(|| format!("the agent has no {what} (ADSL-LINE-MIB)"))
    };
    let ds = first(0, "adslAtucChanCurrTxRate")?;
    let us = first(1, "adslAturChanCurrTxRate")?;
    let margin = first(2, "adslAturCurrSnrMgn")? / 10.0;
    let attn = first(3, "adslAturCurrAtn")? / 10.0;
    let output = first(4, "adslAturCurrOutputPwr")? / 10.0;
    Ok(vec![
        ("adsl.rxrate", format!("SNMP ADSL sync downstream {ds}"), ds),
        ("adsl.txrate", format!("SNMP ADSL sync upstream {us}"), us),
        ("adsl.outpwr", format!("SNMP ADSL output power {output:0.2}dBm"), output),
        ("adsl.attn", format!("SNMP ADSL attenuation {attn:0.2}dB"), attn),
        ("adsl.margin", format!("SNMP ADSL noise margin {margin:0.2}dB"), margin),
    ])
}

pub struct Snmp {
    session: Session,
    budget: Duration,
    /// SNMPCisco837: the ADSL line's figures too.
    adsl: bool,
    faults: Faults,
}

impl Source for Snmp {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn needs_two_ticks(&self) -> bool {
        true
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

impl Snmp {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let walk = async {
            let addr = self.session.resolve().await?;
            let columns = interface_columns(self.session.version);
            let rows = self.session.walk_columns(addr, &columns).await?;
            let interfaces = interface_readings(&columns, &rows);
            let adsl = if self.adsl {
                let columns = adsl_columns();
                let rows = self.session.walk_columns(addr, &columns).await?;
                adsl_readings(&rows).map_err(|e| SnmpError::Garbage(addr, e))?
            } else {
                Vec::new()
            };
            Ok::<_, SnmpError>((interfaces, adsl))
        };
        let result = match tokio::time::timeout(self.budget, walk).await {
            Ok(r) => r,
            Err(_) => Err(SnmpError::Timeout(self.budget.as_secs_f64())),
        };
        match result {
            Ok((interfaces, adsl)) => {
                self.faults.worked(ctx);
                let mut events: Vec<Event> = interfaces.iter().map(|r| reading_event(ctx, r)).collect();
                events.extend(
                    adsl.into_iter()
                        .map(|(name, description, value)| ctx.create_event_prefixed(name, "ok", description, value)),
                );
                events
            }
            Err(e) => {
                let text = format!("SNMP {}:{} - {e}", self.session.host, self.session.port);
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixture;

    #[test]
    fn a_captured_bulk_answer_gives_duct_names_and_prefers_hc_counters() {
        // The capture walked ifDescr, ifInOctets, ifHCInOctets and ifType.
        let m = decode_message(&fixture("snmp", "v2c-getbulk-response.bin")).unwrap();
        let entry = Oid(IF_ENTRY.to_vec());
        let x = Oid(IFX_ENTRY.to_vec());
        let columns = [entry.child(&[2]), entry.child(&[10]), x.child(&[6]), entry.child(&[3])];
        let mut rows = vec![Vec::new(); 4];
        for (i, (oid, v)) in m.pdu.varbinds.iter().enumerate() {
            let col = i % 4;
            rows[col].push((oid.suffix(&columns[col]).unwrap().to_vec(), v.clone()));
        }
        let readings = interface_readings(&columns, &rows);
        let names: Vec<String> = readings.iter().map(|r| format!("{}.{}", r.interface, r.key)).collect();
        assert_eq!(
            names,
            ["lo.ifInOctets", "ifb0.ifInOctets", "ifb1.ifInOctets", "eth0.ifInOctets"]
        );
        assert_eq!(readings[0].value, Value::Counter64(2_595_227_370));

        // Without the ifX column the 32-bit counter is used.
        let readings = interface_readings(&columns[..2], &rows[..2]);
        assert_eq!(readings[3].value, Value::Counter32(521_005_188));

        let (ctx, _) = crate::testing::context("snmp");
        let ev = reading_event(&ctx, &readings[3]);
        assert_eq!(ev.service, "snmp.eth0.ifInOctets");
        assert_eq!(ev.aggregation, Some(Aggregation::Counter32));
        assert_eq!(ev.description, "SNMP interface eth0 ifInOctets=521005188");
    }

    #[test]
    fn nucast_is_the_sum_of_multicast_and_broadcast() {
        let entry = Oid(IF_ENTRY.to_vec());
        let x = Oid(IFX_ENTRY.to_vec());
        let columns = [entry.child(&[2]), entry.child(&[12]), x.child(&[8]), x.child(&[9])];
        let rows = vec![
            vec![(vec![3], Value::OctetString(b"Gi0/1".to_vec()))],
            vec![(vec![3], Value::Counter32(5))],
            vec![(vec![3], Value::Counter64(u64::MAX))],
            vec![(vec![3], Value::Counter64(10))],
        ];
        let r = interface_readings(&columns, &rows);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].interface.as_str(), r[0].key), ("Gi0/1", "ifInNUcastPkts"));
        // Wraps like the counters themselves.
        assert_eq!(r[0].value, Value::Counter64(9));
    }

    #[test]
    fn adsl_figures_are_duct_s_from_the_first_line() {
        let row = |v: Value| vec![(vec![15], v)];
        let rows = vec![
            row(Value::Gauge32(8_128_000)),
            row(Value::Gauge32(832_000)),
            row(Value::Integer(65)),
            row(Value::Integer(235)),
            row(Value::Integer(-12)),
        ];
        let r = adsl_readings(&rows).unwrap();
        let got: Vec<(&str, f64)> = r.iter().map(|(n, _, v)| (*n, *v)).collect();
        assert_eq!(
            got,
            [
                ("adsl.rxrate", 8_128_000.0),
                ("adsl.txrate", 832_000.0),
                ("adsl.outpwr", -1.2),
                ("adsl.attn", 23.5),
                ("adsl.margin", 6.5)
            ]
        );
        assert_eq!(r[2].1, "SNMP ADSL output power -1.20dBm");
        let e = adsl_readings(&rows[..2]).unwrap_err();
        assert!(e.contains("adslAturCurrSnrMgn"), "{e}");
    }

    #[test]
    fn the_walk_asks_the_hc_columns_only_over_v2c() {
        assert_eq!(interface_columns(Version::V1).len(), 11);
        let v2 = interface_columns(Version::V2c);
        assert_eq!(v2.len(), 19);
        assert_eq!(v2[0].to_string(), "1.3.6.1.2.1.2.2.1.2");
        assert_eq!(v2[11].to_string(), "1.3.6.1.2.1.31.1.1.1.6");
    }
}
