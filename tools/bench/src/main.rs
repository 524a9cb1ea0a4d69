//! XTS throughput, 4096-byte sectors, one thread: every veilboot backend beside OpenSSL in
//! the same process and the same run.
//!
//! * OpenSSL 3.6 through the `openssl` crate's vendored build (its VAES/AVX-512 XTS path);
//! * Debian's OpenSSL 3.0 (`openssl speed -evp aes-256-xts -bytes 4096`, AES-NI path);
//! * RustCrypto `xts-mode` one block at a time, the slow reference this design avoids.
//!
//! Each contender encrypts (and decrypts) a 32 MiB buffer of 4096-byte sectors with a
//! fresh plain64 IV per sector, repeated for at least half a second per trial; five trials,
//! best and median MB/s (10^6 bytes/s). Prints the XTS section of BENCHMARKS.md, which
//! `cargo xtask bench` writes.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use veil_agent::xts::SectorCipher;
#[cfg(feature = "openssl")]
use veil_agent::xts::plain64_iv;

const SECTOR: usize = 4096;
const BUFFER: usize = 32 << 20;
const TRIALS: usize = 5;
const MIN_TRIAL: Duration = Duration::from_millis(500);

struct Row {
    name: String,
    op: &'static str,
    key_bits: usize,
    best: f64,
    median: f64,
    /// TSC cycles per byte of the best trial (the TSC counts at the nominal clock).
    cpb: Option<f64>,
}

/// Run `pass` (one pass over BUFFER bytes) until a trial lasts MIN_TRIAL; best and median
/// MB/s, and TSC cycles per byte of the best trial.
fn measure(mut pass: impl FnMut()) -> (f64, f64, f64) {
    pass(); // warm-up: page in the buffer, settle the clock
    let mut trials = Vec::with_capacity(TRIALS);
    for _ in 0..TRIALS {
        let start = Instant::now();
        // SAFETY: RDTSC only reads the time-stamp counter.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        let mut bytes = 0usize;
        while start.elapsed() < MIN_TRIAL {
            pass();
            bytes += BUFFER;
        }
        // SAFETY: as above.
        let cycles = unsafe { core::arch::x86_64::_rdtsc() } - c0;
        trials.push((bytes as f64 / start.elapsed().as_secs_f64() / 1e6, cycles as f64 / bytes as f64));
    }
    trials.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    (trials[TRIALS - 1].0, trials[TRIALS / 2].0, trials[TRIALS - 1].1)
}

fn test_key(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(37).wrapping_add(11)).collect()
}

fn veil_rows(rows: &mut Vec<Row>, buf: &mut [u8], label: &str) -> Result<()> {
    for key_bits in [256, 128] {
        let key = test_key(key_bits / 4);
        for backend in veil_agent::xts::available_backends(&key)? {
            let cipher = SectorCipher::with_backend(backend, SECTOR)?;
            let name = cipher.backend_name();
            // The software-AES build measures only the RustCrypto backend.
            if label.contains("software") && name != "rustcrypto" {
                continue;
            }
            let name = if name == "rustcrypto" {
                format!("veilboot `rustcrypto` backend{label}")
            } else {
                format!("veilboot `{name}` backend (assembly)")
            };
            let (best, median, cpb) = measure(|| cipher.encrypt_sectors(0, buf).unwrap());
            rows.push(Row { name: name.clone(), op: "encrypt", key_bits, best, median, cpb: Some(cpb) });
            let (best, median, cpb) = measure(|| cipher.decrypt_sectors(0, buf).unwrap());
            rows.push(Row { name, op: "decrypt", key_bits, best, median, cpb: Some(cpb) });
        }
    }
    Ok(())
}

/// The vendored OpenSSL's AES-XTS, keyed once, run the way dm-crypt runs a cipher.
#[cfg(feature = "openssl")]
struct VendoredXts {
    ctx: openssl::cipher_ctx::CipherCtx,
    encrypt: bool,
}

#[cfg(feature = "openssl")]
impl VendoredXts {
    fn new(key: &[u8], encrypt: bool) -> Result<VendoredXts> {
        use openssl::cipher::Cipher;
        let cipher = if key.len() == 64 { Cipher::aes_256_xts() } else { Cipher::aes_128_xts() };
        let mut ctx = openssl::cipher_ctx::CipherCtx::new()?;
        if encrypt {
            ctx.encrypt_init(Some(cipher), Some(key), None)?;
        } else {
            ctx.decrypt_init(Some(cipher), Some(key), None)?;
        }
        Ok(VendoredXts { ctx, encrypt })
    }

    /// One pass over `buf`: re-key nothing, reset only the IV per sector, as dm-crypt does.
    fn pass(&mut self, buf: &mut [u8]) {
        for (i, sector) in buf.chunks_exact_mut(SECTOR).enumerate() {
            let iv = plain64_iv((i * SECTOR / 512) as u64);
            if self.encrypt {
                self.ctx.encrypt_init(None, None, Some(&iv)).unwrap();
            } else {
                self.ctx.decrypt_init(None, None, Some(&iv)).unwrap();
            }
            self.ctx.cipher_update_inplace(sector, SECTOR).unwrap();
        }
    }
}

#[cfg(feature = "openssl")]
fn openssl_rows(rows: &mut Vec<Row>, buf: &mut [u8]) -> Result<()> {
    let version = openssl::version::version();
    for key_bits in [256, 128] {
        let key = test_key(key_bits / 4);
        for op in ["encrypt", "decrypt"] {
            let mut xts = VendoredXts::new(&key, op == "encrypt")?;
            let (best, median, cpb) = measure(|| xts.pass(buf));
            rows.push(Row {
                name: format!("{version} (vendored, `openssl` crate)"),
                op,
                key_bits,
                best,
                median,
                cpb: Some(cpb),
            });
        }
    }
    Ok(())
}

fn xts_mode_row(rows: &mut Vec<Row>, buf: &mut [u8]) {
    use aes::Aes256;
    use aes::cipher::KeyInit;
    let key = test_key(64);
    let xts =
        xts_mode::Xts128::new(Aes256::new_from_slice(&key[..32]).unwrap(), Aes256::new_from_slice(&key[32..]).unwrap());
    let (best, median, cpb) = measure(|| {
        xts.encrypt_area(buf, SECTOR, 0, |i| xts_mode::get_tweak_default(i * 8));
    });
    rows.push(Row {
        name: "RustCrypto `xts-mode` (one block per call; reference only)".into(),
        op: "encrypt",
        key_bits: 256,
        best,
        median,
        cpb: Some(cpb),
    });
}

/// Debian's OpenSSL 3.0 command line, same machine, same run.
fn system_openssl_rows(rows: &mut Vec<Row>) -> Result<()> {
    let version = Command::new("openssl").arg("version").output().context("running `openssl version`")?;
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    for key_bits in [256, 128] {
        let mut rates = Vec::new();
        for _ in 0..TRIALS {
            rates.push(openssl_speed(key_bits, 1)?);
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rows.push(Row {
            name: format!("Debian {version} (`openssl speed -evp`)"),
            op: "encrypt",
            key_bits,
            best: rates[TRIALS - 1],
            median: rates[TRIALS / 2],
            cpb: None,
        });
    }
    Ok(())
}

/// One `openssl speed -evp aes-N-xts -bytes 4096` run of `seconds`: MB/s.
fn openssl_speed(key_bits: usize, seconds: u32) -> Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-evp", &format!("aes-{key_bits}-xts"), "-bytes", "4096", "-seconds", &seconds.to_string()])
        .output()
        .context("running `openssl speed`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Last line: "AES-256-XTS    5184000.00k" (1000s of bytes per second).
    let rate = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(&format!("AES-{key_bits}-XTS")))
        .and_then(|v| v.trim().trim_end_matches('k').parse::<f64>().ok())
        .with_context(|| format!("cannot parse `openssl speed` output: {text}"))?;
    Ok(rate / 1000.0)
}

/// MB/s of `pass` (over `BUFFER` bytes) run for at least `at_least`.
#[cfg(feature = "openssl")]
fn rate_of(at_least: Duration, mut pass: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed() < at_least {
        pass();
        bytes += BUFFER;
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

#[cfg(feature = "openssl")]
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Pairs per row of the paired comparison.
#[cfg(feature = "openssl")]
const PAIRS: usize = 61;

/// Medians of (veilboot MB/s, peer MB/s, ratio) over PAIRS back-to-back pairs of 50 ms:
/// `ours` (a pass of `cipher` over `buf`) then `peer` (its MB/s over at least 50 ms).
#[cfg(feature = "openssl")]
fn pair(
    cipher: &SectorCipher,
    encrypt: bool,
    buf: &mut [u8],
    mut peer: impl FnMut(&mut [u8], Duration) -> Result<f64>,
) -> Result<(f64, f64, f64)> {
    let (mut a, mut b, mut r) = (Vec::new(), Vec::new(), Vec::new());
    let slot = Duration::from_millis(50);
    for _ in 0..PAIRS {
        let x = rate_of(slot, || {
            if encrypt { cipher.encrypt_sectors(0, buf).unwrap() } else { cipher.decrypt_sectors(0, buf).unwrap() }
        });
        let y = peer(buf, slot)?;
        a.push(x);
        b.push(y);
        r.push(x / y);
    }
    Ok((median(a), median(b), median(r)))
}

/// Debian's own OpenSSL 3.0 (`libcrypto.so.3`), loaded at run time next to the vendored
/// 3.6, so that veilboot's `aesni` backend and OpenSSL 3.0's AES-NI XTS run the same loop in
/// the same process: a fresh plain64 IV per 4096-byte sector on both sides (`openssl speed`
/// instead reuses one IV and skips the per-sector re-initialisation).
#[cfg(feature = "openssl")]
struct SystemOpenSsl {
    lib: libloading::Library,
}

#[cfg(feature = "openssl")]
impl SystemOpenSsl {
    const PATH: &str = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3";

    fn load() -> Result<SystemOpenSsl> {
        // SAFETY: loading OpenSSL runs only its library constructors.
        let lib = unsafe { libloading::Library::new(Self::PATH) }.with_context(|| format!("loading {}", Self::PATH))?;
        Ok(SystemOpenSsl { lib })
    }

    fn version(&self) -> Result<String> {
        // SAFETY: OpenSSL_version(int) -> const char*, a static string.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(i32) -> *const std::ffi::c_char> =
                self.lib.get(b"OpenSSL_version\0")?;
            Ok(std::ffi::CStr::from_ptr(f(0)).to_string_lossy().into_owned())
        }
    }

    /// MB/s of XTS over `buf` for at least `at_least`, a fresh IV per sector.
    fn rate(&self, key: &[u8], encrypt: bool, buf: &mut [u8], at_least: Duration) -> Result<f64> {
        type Ctx = std::ffi::c_void;
        // SAFETY: the EVP signatures of OpenSSL 3.0; the context is freed below; XTS allows
        // in-place updates and writes exactly the input length.
        unsafe {
            let new: libloading::Symbol<unsafe extern "C" fn() -> *mut Ctx> = self.lib.get(b"EVP_CIPHER_CTX_new\0")?;
            let free: libloading::Symbol<unsafe extern "C" fn(*mut Ctx)> = self.lib.get(b"EVP_CIPHER_CTX_free\0")?;
            let cipher: libloading::Symbol<unsafe extern "C" fn() -> *const Ctx> =
                self.lib.get(if key.len() == 64 { b"EVP_aes_256_xts\0" } else { b"EVP_aes_128_xts\0" })?;
            let init: libloading::Symbol<
                unsafe extern "C" fn(*mut Ctx, *const Ctx, *const Ctx, *const u8, *const u8, i32) -> i32,
            > = self.lib.get(b"EVP_CipherInit_ex\0")?;
            let update: libloading::Symbol<unsafe extern "C" fn(*mut Ctx, *mut u8, *mut i32, *const u8, i32) -> i32> =
                self.lib.get(b"EVP_CipherUpdate\0")?;
            let ctx = new();
            if ctx.is_null()
                || init(ctx, cipher(), std::ptr::null(), key.as_ptr(), std::ptr::null(), i32::from(encrypt)) != 1
            {
                free(ctx);
                bail!("EVP_CipherInit_ex of the system OpenSSL failed");
            }
            let mut failed = false;
            let r = rate_of(at_least, || {
                for (i, sector) in buf.chunks_exact_mut(SECTOR).enumerate() {
                    let iv = plain64_iv((i * SECTOR / 512) as u64);
                    let mut outl = 0i32;
                    failed |= init(ctx, std::ptr::null(), std::ptr::null(), std::ptr::null(), iv.as_ptr(), -1) != 1;
                    failed |= update(ctx, sector.as_mut_ptr(), &mut outl, sector.as_ptr(), SECTOR as i32) != 1
                        || outl != SECTOR as i32;
                }
            });
            free(ctx);
            if failed {
                bail!("EVP_CipherUpdate of the system OpenSSL failed");
            }
            Ok(r)
        }
    }
}

/// Paired comparison against the XTS throughput targets (OpenSSL 3.6, Debian's 3.0), robust to a noisy (virtualized)
/// machine: veilboot and its peer run back to back, alternately, PAIRS pairs of 50 ms, and
/// each pair gives a ratio; the median ratio is reported. vaes512 against the vendored
/// OpenSSL 3.6 (its VAES/AVX-512 path); aesni against Debian's OpenSSL 3.0 (its AES-NI path),
/// both in this process with the same per-sector loop.
#[cfg(feature = "openssl")]
fn paired_section(buf: &mut [u8]) -> Result<String> {
    let mut out = format!(
        "\n### Paired against the targets\n\nCommand: `cargo run --release -p veil-bench -- --paired` (also part of `cargo xtask bench`). Each row: {PAIRS} back-to-back pairs of 50 ms\n(veilboot, then the peer, on the same 32 MiB buffer, a fresh plain64 IV per 4096-byte sector on both sides), medians.\n\n| veilboot | peer | key | op | veilboot median MB/s | peer median MB/s | median ratio | target |\n|---|---|---|---|---:|---:|---:|---:|\n"
    );
    let version = openssl::version::version();
    let system = SystemOpenSsl::load()?;
    let system_version = system.version()?;
    for key_bits in [256, 128] {
        let key = test_key(key_bits / 4);
        for backend in veil_agent::xts::available_backends(&key)? {
            let name = backend.name();
            if name != "vaes512" && name != "aesni" {
                continue;
            }
            let cipher = SectorCipher::with_backend(backend, SECTOR)?;
            for op in ["encrypt", "decrypt"] {
                let encrypt = op == "encrypt";
                if name == "vaes512" {
                    let mut xts = VendoredXts::new(&key, encrypt)?;
                    let (a, b, r) = pair(&cipher, encrypt, buf, |buf, slot| Ok(rate_of(slot, || xts.pass(buf))))?;
                    out += &format!(
                        "| `vaes512` | {version} (vendored; VAES/AVX-512) | AES-{key_bits} | {op} | {a:.0} | {b:.0} | {r:.2} | 1.00 |\n"
                    );
                } else {
                    let (a, b, r) = pair(&cipher, encrypt, buf, |buf, slot| system.rate(&key, encrypt, buf, slot))?;
                    out += &format!(
                        "| `aesni` | Debian {system_version} (libcrypto.so.3; AES-NI) | AES-{key_bits} | {op} | {a:.0} | {b:.0} | {r:.2} | 0.90 |\n"
                    );
                }
            }
        }
    }
    out += "\nInside the firmware the backend is chosen at start-up by measuring each one the CPU offers (16 KiB each).\n\
        The in-firmware comparison under KVM cannot be made on this machine: its nested KVM traps the firmware's first\n\
        SSE instruction into KVM's instruction emulator (the MOVDQU loads are emulated, PXOR then stops the VM with\n\
        \"emulation failure\"), so only TCG runs the firmware here, and TCG emulates AES-NI and VAES in helpers.\n";
    Ok(out)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("## XTS sector cipher throughput\n\n");
    s.push_str("4096-byte sectors, one thread, a fresh plain64 IV per sector, 32 MiB buffer; five trials of at least 0.5 s, MB/s = 10^6 bytes/s.\n");
    s.push_str(&format!(
        "Machine: {}, {} logical CPUs.\n",
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    s.push_str("Command: `cargo xtask bench` (runs `cargo run --release -p veil-bench`).\n\n");
    s.push_str(
        "| implementation | key | op | best MB/s | median MB/s | TSC cycles/byte |\n|---|---|---|---:|---:|---:|\n",
    );
    for r in rows {
        let cpb = r.cpb.map_or("-".to_string(), |c| format!("{c:.2}"));
        s.push_str(&format!(
            "| {} | AES-{} | {} | {:.0} | {:.0} | {} |\n",
            r.name, r.key_bits, r.op, r.best, r.median, cpb
        ));
    }
    s.push_str(
        "\nOn the host the `rustcrypto` backend runs RustCrypto `aes` with its own AES-NI detection. The firmware\n",
    );
    s.push_str("(x86_64-unknown-none) runs the same code on the bitsliced software AES; the \"software AES\" rows are the same\n");
    s.push_str("benchmark built with `--cfg aes_backend=\"soft\"`, in the same `cargo xtask bench` run.\n");
    s.push_str(
        "The `aesni`, `vaes256` and `vaes512` rows are veilboot's own assembly (8, 8 and 32 blocks per iteration; `vaes512` takes a whole run of sectors per call).\n",
    );
    s.push_str("`openssl speed` reuses one IV for every 4096-byte buffer and so skips the per-sector EVP re-initialisation that\n");
    s.push_str("the other rows (and dm-crypt) pay; the paired rows below run Debian's OpenSSL 3.0 with the same per-sector loop.\n");
    s
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut buf = vec![0x5au8; BUFFER];
    let mut rows = Vec::new();
    match args.as_slice() {
        [] => {}
        // Rows only, tab-separated, for a build with RustCrypto forced to software AES.
        [flag] if flag == "--soft-rows" => {
            veil_rows(&mut rows, &mut buf, " (software AES, as in the firmware)")?;
            for r in &rows {
                println!("{}\t{}\t{}\t{}\t{}\t{}", r.name, r.op, r.key_bits, r.best, r.median, r.cpb.unwrap_or(0.0));
            }
            return Ok(());
        }
        // Only the paired comparison against the targets (quick checks while tuning).
        #[cfg(feature = "openssl")]
        [flag] if flag == "--paired" => {
            print!("{}", paired_section(&mut buf)?);
            return Ok(());
        }
        _ => bail!("usage: veil-bench [--soft-rows | --paired]   (prints the BENCHMARKS.md section on stdout)"),
    }
    veil_rows(&mut rows, &mut buf, " (host: RustCrypto's own AES-NI)")?;
    // Rows measured by the software-AES build `cargo xtask bench` made just before.
    if let Ok(text) = std::env::var("VEIL_BENCH_SOFT_ROWS") {
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if let [name, op, bits, best, median, cpb] = f[..] {
                let op = if op == "encrypt" { "encrypt" } else { "decrypt" };
                rows.push(Row {
                    name: name.into(),
                    op,
                    key_bits: bits.parse()?,
                    best: best.parse()?,
                    median: median.parse()?,
                    cpb: cpb.parse().ok(),
                });
            }
        }
    }
    #[cfg(feature = "openssl")]
    openssl_rows(&mut rows, &mut buf)?;
    system_openssl_rows(&mut rows)?;
    xts_mode_row(&mut rows, &mut buf);
    print!("{}", render(&rows));
    #[cfg(feature = "openssl")]
    print!("{}", paired_section(&mut buf)?);
    Ok(())
}
