//! `duct.sources.sensors.environment.MPL115`: pressure and temperature
//! from an MPL115A2 barometer on an I2C bus, through the kernel's i2c-dev
//! interface (`/dev/i2c-(smbus)`, the chip selected with the `I2C_SLAVE`
//! ioctl at `address`, SMBus transfers with the `I2C_SMBUS` ioctl, as
//! Duct's smbus2 did).
//!
//! Every tick (off the async threads, within its budget) the source reads
//! the chip's calibration coefficients, starts a conversion, waits the
//! 3 ms Duct waited (the datasheet's maximum conversion time is 1.6 ms)
//! and reads the raw pressure and temperature; [`compensate`] then does
//! Duct's arithmetic, which is the datasheet's compensation polynomial
//! scaled to 500-1150 hPa and, when `altitude` (metres) is set, reduced
//! to sea level. Duct read the coefficients once, when the source was
//! built (and in 2.2.1 never awaited that read, so the source failed);
//! re-reading eight bytes each tick costs nothing and survives the chip
//! being replaced.
//!
//! Events: `(service).hpa` and `(service).temp`, rounded to 2 decimals as
//! Duct did. A bus that cannot be opened, a chip that does not answer or
//! coefficients that are all 0x00 or all 0xff (nothing on the bus, or a
//! bus stuck high) give one critical `(service)` naming the cause.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{Event, Poll, Source, SourceArgs, SourceContext, SourceSpec};
use serde::Deserialize;

use super::{budget, Faults, DEFAULT_TIMEOUT};
use crate::network::GRACE;

/// The chip's registers (MPL115A2 datasheet, table 2).
const PADC_MSB: u8 = 0x00;
const A0_MSB: u8 = 0x04;
const CONVERT: u8 = 0x12;

/// The wait between starting a conversion and reading it (Duct's 3 ms).
const CONVERSION: Duration = Duration::from_millis(3);

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Options {
    /// The chip's 7-bit I2C address.
    address: i64,
    /// The bus number: `/dev/i2c-(smbus)`.
    smbus: i64,
    /// Metres above sea level; the pressure is reduced to sea level.
    altitude: f64,
    /// Seconds the conversation may take (also the common option).
    timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            address: 0x60,
            smbus: 1,
            altitude: 0.0,
            timeout: None,
        }
    }
}

const SUMMARY: &str = "MPL115A2 I2C barometer through i2c-dev (/dev/i2c-N): `address` (0x60), `smbus` (1), \
                       `altitude` (0 m; pressure reduced to sea level), `timeout`";
const METRICS: &[&str] = &["(service).hpa: pressure, hPa", "(service).temp: temperature, °C"];

pub fn spec() -> SourceSpec {
    SourceSpec::new::<Options>("duct.sources.sensors.environment.MPL115", SUMMARY, METRICS, build)
}

/// The module path Duct also accepts.
pub fn alias_spec() -> SourceSpec {
    SourceSpec::new::<Options>(
        "duct.sources.sensors.environment.mpl115.MPL115",
        SUMMARY,
        METRICS,
        build,
    )
}

fn build(args: &SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic> {
    let o: Options = args.options()?;
    let address = u16::try_from(o.address)
        .ok()
        .filter(|a| (0x03..=0x77).contains(a))
        .ok_or_else(|| args.invalid("address", "must be a 7-bit I2C address, 0x03 to 0x77"))?;
    let smbus = u32::try_from(o.smbus).map_err(|_| args.invalid("smbus", "must be a bus number, 0 or more"))?;
    if !o.altitude.is_finite() || !(-500.0..44330.0).contains(&o.altitude) {
        return Err(args.invalid("altitude", "must be metres above sea level, -500 to 44330"));
    }
    Ok(Box::new(Mpl115 {
        device: PathBuf::from(format!("/dev/i2c-{smbus}")),
        address,
        altitude: o.altitude,
        budget: budget(args, DEFAULT_TIMEOUT),
        faults: Faults::default(),
    }))
}

pub struct Mpl115 {
    device: PathBuf,
    address: u16,
    altitude: f64,
    budget: Duration,
    faults: Faults,
}

impl Source for Mpl115 {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move { Ok(self.check(ctx).await) })
    }

    fn tick_timeout(&self, _configured: Duration) -> Duration {
        self.budget + GRACE
    }
}

impl Mpl115 {
    async fn check(&mut self, ctx: &SourceContext) -> Vec<Event> {
        let (device, address) = (self.device.clone(), self.address);
        let read = tokio::task::spawn_blocking(move || {
            let mut chip = I2cDev::open(&device, address)?;
            sample(&mut chip, std::thread::sleep)
        });
        let result = match tokio::time::timeout(self.budget, read).await {
            Ok(Ok(Ok(raw))) => Ok(raw),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(join)) => Err(format!("the read failed: {join}")),
            Err(_) => Err(format!("the chip took longer than {} s", self.budget.as_secs_f64())),
        };
        match result {
            Ok(raw) => {
                self.faults.worked(ctx);
                let r = compensate(&raw, self.altitude);
                vec![
                    ctx.create_event_prefixed("hpa", "ok", "HPA", round2(r.hpa)),
                    ctx.create_event_prefixed("temp", "ok", "Temperature", round2(r.celsius)),
                ]
            }
            Err(cause) => {
                let text = format!(
                    "MPL115 at 0x{:02x} on {} - {cause}",
                    self.address,
                    self.device.display()
                );
                self.faults.failed(ctx, &text);
                vec![ctx.create_event("critical", text, None::<i64>)]
            }
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// What one read of the chip gave: its coefficient registers (a0, b1, b2,
/// c12, each MSB first) and its ADC registers (Padc, Tadc, MSB first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub coefficients: [u8; 8],
    pub adc: [u8; 4],
}

/// A compensated reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub hpa: f64,
    pub celsius: f64,
}

/// Duct's arithmetic on one raw read: the coefficients as the datasheet's
/// fixed-point formats (a0 /2^3, b1 /2^13, b2 /2^14, c12 /2^24, all
/// signed 16-bit), the 10-bit ADC values, the compensation polynomial
/// `a0 + (b1 + c12·Tadc)·Padc + b2·Tadc` mapped onto 500-1150 hPa, the
/// barometric reduction for `altitude` metres, and Duct's temperature line
/// `25 - (Tadc - 512) / 5.35`.
pub(crate) fn compensate(raw: &Raw, altitude: f64) -> Reading {
    let c = &raw.coefficients;
    let signed = |msb: u8, lsb: u8| i16::from_be_bytes([msb, lsb]) as f64;
    let a0 = signed(c[0], c[1]) / 8.0;
    let b1 = signed(c[2], c[3]) / 8192.0;
    let b2 = signed(c[4], c[5]) / 16384.0;
    let c12 = signed(c[6], c[7]) / 16_777_216.0;
    let padc = f64::from(u16::from_be_bytes([raw.adc[0], raw.adc[1]]) >> 6);
    let tadc = f64::from(u16::from_be_bytes([raw.adc[2], raw.adc[3]]) >> 6);
    let pcomp = a0 + (b1 + c12 * tadc) * padc + b2 * tadc;
    let mut hpa = pcomp * ((1150.0 - 500.0) / 1023.0) + 500.0;
    hpa /= (1.0 - altitude / 44330.0).powf(5.255);
    Reading {
        hpa,
        celsius: 25.0 - (tadc - 512.0) / 5.35,
    }
}

/// The SMBus transfers the source needs from a chip; [`I2cDev`] on a real
/// bus, a fake in the tests.
pub(crate) trait Chip {
    /// SMBus "I2C block read": `buf.len()` bytes from `register` on.
    fn read_block(&mut self, register: u8, buf: &mut [u8]) -> io::Result<()>;
    /// SMBus "write byte data".
    fn write_byte(&mut self, register: u8, value: u8) -> io::Result<()>;
}

/// One read: coefficients, a conversion started, `sleep` for its time,
/// the ADC values. Coefficients that are all 0x00 or all 0xff are not a
/// chip (an empty bus reads one or the other).
pub(crate) fn sample(chip: &mut dyn Chip, sleep: fn(Duration)) -> Result<Raw, String> {
    let mut coefficients = [0u8; 8];
    chip.read_block(A0_MSB, &mut coefficients)
        .map_err(|e| format!("reading the coefficients failed: {e}"))?;
    if coefficients.iter().all(|&b| b == 0) || coefficients.iter().all(|&b| b == 0xff) {
        return Err(format!(
            "the coefficients read as {:02x?}: no MPL115 answers at this address",
            coefficients
        ));
    }
    chip.write_byte(CONVERT, 0x01)
        .map_err(|e| format!("starting a conversion failed: {e}"))?;
    sleep(CONVERSION);
    let mut adc = [0u8; 4];
    chip.read_block(PADC_MSB, &mut adc)
        .map_err(|e| format!("reading the conversion failed: {e}"))?;
    Ok(Raw { coefficients, adc })
}

// The i2c-dev ioctls (linux/i2c-dev.h, linux/i2c.h).
const I2C_SLAVE: libc::c_ulong = 0x0703;
const I2C_SMBUS: libc::c_ulong = 0x0720;
const I2C_SMBUS_READ: u8 = 1;
const I2C_SMBUS_WRITE: u8 = 0;
const I2C_SMBUS_BYTE_DATA: u32 = 2;
const I2C_SMBUS_I2C_BLOCK_DATA: u32 = 8;
/// `I2C_SMBUS_BLOCK_MAX`: the most one block transfer carries.
const BLOCK_MAX: usize = 32;

/// `union i2c_smbus_data`: a byte, a word or a length-prefixed block.
#[repr(C)]
union SmbusData {
    byte: u8,
    word: u16,
    block: [u8; BLOCK_MAX + 2],
}

/// `struct i2c_smbus_ioctl_data`.
#[repr(C)]
struct SmbusIoctl {
    read_write: u8,
    command: u8,
    size: u32,
    data: *mut SmbusData,
}

/// A chip on an i2c-dev bus.
pub(crate) struct I2cDev {
    file: File,
}

impl I2cDev {
    /// Opens `device` and selects the chip at `address`.
    pub fn open(device: &std::path::Path, address: u16) -> Result<I2cDev, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map_err(|e| {
                let hint = match e.kind() {
                    io::ErrorKind::NotFound => " (is the i2c-dev module loaded and the bus enabled?)",
                    io::ErrorKind::PermissionDenied => " (the agent's user needs the i2c group)",
                    _ => "",
                };
                format!("cannot open: {e}{hint}")
            })?;
        // SAFETY: I2C_SLAVE takes the address as its integer argument; the
        // descriptor is open for the duration of the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), I2C_SLAVE as _, libc::c_ulong::from(address)) };
        if rc < 0 {
            return Err(format!(
                "cannot select address 0x{address:02x}: {} (not an i2c-dev device, or the address is taken by a kernel driver)",
                io::Error::last_os_error()
            ));
        }
        Ok(I2cDev { file })
    }

    fn smbus(&mut self, read_write: u8, command: u8, size: u32, data: &mut SmbusData) -> io::Result<()> {
        let mut args = SmbusIoctl {
            read_write,
            command,
            size,
            data,
        };
        // SAFETY: `args` and the data it points to outlive the call, and
        // the union is as large as the kernel's (34 bytes).
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), I2C_SMBUS as _, &mut args as *mut SmbusIoctl) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Chip for I2cDev {
    fn read_block(&mut self, register: u8, buf: &mut [u8]) -> io::Result<()> {
        assert!(buf.len() <= BLOCK_MAX, "an SMBus block is at most 32 bytes");
        let mut data = SmbusData {
            block: [0; BLOCK_MAX + 2],
        };
        // SAFETY (union): every field is plain bytes; the kernel reads the
        // wanted length from block[0] and writes the bytes after it.
        unsafe { data.block[0] = buf.len() as u8 };
        self.smbus(I2C_SMBUS_READ, register, I2C_SMBUS_I2C_BLOCK_DATA, &mut data)?;
        let block = unsafe { data.block };
        let got = usize::from(block[0]).min(buf.len());
        if got < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{got} of {} bytes", buf.len()),
            ));
        }
        buf.copy_from_slice(&block[1..=buf.len()]);
        Ok(())
    }

    fn write_byte(&mut self, register: u8, value: u8) -> io::Result<()> {
        let mut data = SmbusData { word: 0 };
        data.byte = value;
        self.smbus(I2C_SMBUS_WRITE, register, I2C_SMBUS_BYTE_DATA, &mut data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the MPL115A2 datasheet (Freescale, now NXP,
    /// "MPL115A2 Miniature I2C Digital Barometer", the compensation
    /// example): a0 = 0x3ECE (2009.75), b1 = 0xB3F9 (-2.37585),
    /// b2 = 0xC517 (-0.92047), c12 = 0x33C8 (0.000790), Padc = 0x6680
    /// (410), Tadc = 0x7EC0 (507), which the datasheet works out to
    /// Pcomp = 733.2 and a pressure of 96.59 kPa.
    const DATASHEET: Raw = Raw {
        coefficients: [0x3e, 0xce, 0xb3, 0xf9, 0xc5, 0x17, 0x33, 0xc8],
        adc: [0x66, 0x80, 0x7e, 0xc0],
    };

    #[test]
    fn the_datasheet_example_gives_its_pressure() {
        let r = compensate(&DATASHEET, 0.0);
        assert!((r.hpa - 965.9).abs() < 0.05, "96.59 kPa, got {} hPa", r.hpa);
        assert_eq!(round2(r.hpa), 965.87);
        // Duct's line: 25 - (507 - 512) / 5.35.
        assert_eq!(round2(r.celsius), 25.93);
    }

    #[test]
    fn altitude_reduces_to_sea_level() {
        let station = compensate(&DATASHEET, 0.0).hpa;
        let at_400m = compensate(&DATASHEET, 400.0).hpa;
        // The standard atmosphere's factor at 400 m: (1 - 400/44330)^-5.255.
        assert!((at_400m / station - 1.0488).abs() < 0.0005, "{at_400m}");
        assert_eq!(
            compensate(&DATASHEET, 400.0).celsius,
            compensate(&DATASHEET, 0.0).celsius
        );
    }

    /// A chip holding the datasheet's registers: the ADC registers hold
    /// the conversion only after CONVERT is written.
    struct FakeChip {
        registers: [u8; 0x13],
        converted: bool,
        log: Vec<String>,
        fail_convert: bool,
    }

    impl FakeChip {
        fn new(coefficients: [u8; 8]) -> FakeChip {
            let mut registers = [0u8; 0x13];
            registers[0x04..0x0c].copy_from_slice(&coefficients);
            FakeChip {
                registers,
                converted: false,
                log: Vec::new(),
                fail_convert: false,
            }
        }
    }

    impl Chip for FakeChip {
        fn read_block(&mut self, register: u8, buf: &mut [u8]) -> io::Result<()> {
            self.log.push(format!("read {register:#04x} {}", buf.len()));
            let start = usize::from(register);
            buf.copy_from_slice(&self.registers[start..start + buf.len()]);
            Ok(())
        }

        fn write_byte(&mut self, register: u8, value: u8) -> io::Result<()> {
            self.log.push(format!("write {register:#04x} {value:#04x}"));
            if self.fail_convert {
                return Err(io::Error::from_raw_os_error(libc::EREMOTEIO));
            }
            if register == CONVERT && value == 1 && !self.converted {
                self.registers[0..4].copy_from_slice(&DATASHEET.adc);
                self.converted = true;
            }
            Ok(())
        }
    }

    #[test]
    fn a_sample_reads_coefficients_converts_then_reads_the_adc() {
        let mut chip = FakeChip::new(DATASHEET.coefficients);
        let raw = sample(&mut chip, |_| {}).unwrap();
        assert_eq!(raw, DATASHEET);
        assert_eq!(chip.log, ["read 0x04 8", "write 0x12 0x01", "read 0x00 4"]);
    }

    #[test]
    fn an_absent_or_failing_chip_is_a_clear_error() {
        let err = sample(&mut FakeChip::new([0xff; 8]), |_| {}).unwrap_err();
        assert!(err.contains("no MPL115 answers"), "{err}");
        let err = sample(&mut FakeChip::new([0; 8]), |_| {}).unwrap_err();
        assert!(err.contains("no MPL115 answers"), "{err}");
        let mut chip = FakeChip::new(DATASHEET.coefficients);
        chip.fail_convert = true;
        let err = sample(&mut chip, |_| {}).unwrap_err();
        assert!(
            err.starts_with("starting a conversion failed: Remote I/O error"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_bus_names_the_device() {
        let err = I2cDev::open(std::path::Path::new("/dev/i2c-no-such-bus"), 0x60)
            .err()
            .unwrap();
        assert!(err.contains("i2c-dev module"), "{err}");
        // Not an i2c-dev device: the ioctl is refused.
        let err = I2cDev::open(std::path::Path::new("/dev/null"), 0x60).err().unwrap();
        assert!(err.starts_with("cannot select address 0x60"), "{err}");
    }
}
