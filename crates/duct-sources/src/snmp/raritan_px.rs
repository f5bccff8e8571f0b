//! `duct.sources.power.raritan_px.RaritanPX`: a Raritan PX PDU's outlet
//! and inlet sensors over SNMP (PDU2-MIB), under Duct's names.
//!
//! Duct resolved `measurementsOutletSensorValue` and
//! `measurementsInletSensorValue` through compiled MIB modules in
//! `mib_path`; ductd has their OIDs built in (the option is accepted and
//! unused). Each table is indexed by PDU id, outlet or inlet id, and
//! sensor type; as in Duct, the PDU id is not part of the name, the values
//! are sent as the PDU gives them (no scaling by the sensor's decimal
//! digits), and sensor types other than these six are skipped.

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};

use super::ber::{Oid, Value};
use super::{session, Session, SnmpError};
use crate::network::GRACE;
use crate::services::Faults;

/// PDU2-MIB (enterprise 13742): measurementsOutletSensorValue and
/// measurementsInletSensorValue.
const OUTLET_VALUE: [u32; 14] = [1, 3, 6, 1, 4, 1, 13742, 6, 5, 4, 3, 1, 4, 0];
const INLET_VALUE: [u32; 14] = [1, 3, 6, 1, 4, 1, 13742, 6, 5, 2, 3, 1, 4, 0];

/// PDU2-MIB's SensorTypeEnumeration values Duct reported, their names,
/// and whether Duct sent them as floats.
const SENSORS: [(u32, &str, bool); 6] = [
    (4, "voltage", false),        // rmsVoltage
    (1, "current", true),         // rmsCurrent
    (5, "power", false),          // activePower
    (6, "apparent_power", false), // apparentPower
    (7, "pf", true),              // powerFactor
    (8, "energy", false),         // activeEnergy
];

/// SNMP's options, and Duct's `mib_path` (accepted, not needed: the OIDs
/// are built in).
fn options() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    super::option_names_with(&NAMES, &["mib_path"])
}

pub fn spec() -> SourceSpec {
    let mut spec = SourceSpec::new::<super::Options>(
        "duct.sources.power.raritan_px.RaritanPX",
        "A Raritan PX PDU's outlet and inlet sensors (PDU2-MIB, OIDs built in): `ip` (127.0.0.1), `port` (161), \
         `community` (public), `mib_path` (accepted, unused), and SNMP's `version`, `retries`, `request_timeout`",
        &[
            "(service).outlet.(N).(voltage, current, power, apparent_power, pf, energy): as the PDU reports them",
            "(service).inlet.(N).(the same)",
            "(service): critical with no metric when the PDU does not answer",
        ],
        build,
    );
    spec.options = options;
    spec
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let (session, budget) = session(args)?;
    Ok(Box::new(RaritanPx {
        session,
        budget,
        faults: Faults::default(),
    }))
}

pub(crate) fn columns() -> Vec<Oid> {
    let table = |t: &[u32; 14]| Oid(t[..13].to_vec());
    vec![table(&OUTLET_VALUE), table(&INLET_VALUE)]
}

/// Duct's events from a walk of [`columns`]: (name, description, value,
/// whether a float).
pub(crate) fn readings(rows: &[Vec<(Vec<u32>, Value)>]) -> Vec<(String, String, f64, bool)> {
    let mut out = Vec::new();
    for (label, rows) in ["outlet", "inlet"].iter().zip(rows) {
        for (index, value) in rows {
            let [.., id, sensor] = index.as_slice() else {
                continue;
            };
            let Some((_, metric, float)) = SENSORS.iter().find(|(t, _, _)| t == sensor) else {
                continue;
            };
            let Some(v) = value.as_i128() else {
                continue;
            };
            let v = v as f64;
            let shown = if *float { format!("{v:?}") } else { format!("{v}") };
            out.push((
                format!("{label}.{id}.{metric}"),
                format!("Raritan PX {label}-{id} {metric}={shown}"),
                v,
                *float,
            ));
        }
    }
    out
}

pub struct RaritanPx {
    session: Session,
    budget: Duration,
    faults: Faults,
}

impl Source for RaritanPx {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

impl RaritanPx {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let walk = async {
            let addr = self.session.resolve().await?;
            self.session.walk_columns(addr, &columns()).await
        };
        let result = match tokio::time::timeout(self.budget, walk).await {
            Ok(r) => r,
            Err(_) => Err(SnmpError::Timeout(self.budget.as_secs_f64())),
        };
        match result {
            Ok(rows) => {
                self.faults.worked(ctx);
                readings(&rows)
                    .into_iter()
                    .map(|(name, description, v, float)| {
                        if float {
                            ctx.create_event_prefixed(&name, "ok", description, v)
                        } else {
                            ctx.create_event_prefixed(&name, "ok", description, v as i64)
                        }
                    })
                    .collect()
            }
            Err(e) => {
                let text = format!("Raritan PX {}:{} - {e}", self.session.host, self.session.port);
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensors_are_named_as_duct_did_without_the_pdu_id() {
        let rows = vec![
            vec![
                (vec![1, 3, 4], Value::Gauge32(230)),
                (vec![1, 3, 1], Value::Gauge32(12)),
                (vec![1, 3, 14], Value::Gauge32(1)), // onOff: not Duct's
            ],
            vec![(vec![1, 1, 8], Value::Gauge32(193_359))],
        ];
        let r = readings(&rows);
        let names: Vec<&str> = r.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(names, ["outlet.3.voltage", "outlet.3.current", "inlet.1.energy"]);
        assert_eq!(r[0].1, "Raritan PX outlet-3 voltage=230");
        assert_eq!(r[1].1, "Raritan PX outlet-3 current=12.0");
        assert_eq!(columns()[0].to_string(), "1.3.6.1.4.1.13742.6.5.4.3.1.4");
    }
}
