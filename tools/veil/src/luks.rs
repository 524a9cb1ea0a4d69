//! `veil luks ...`: LUKS2 volumes in image files, through agent::luks2 (the same code the
//! firmware runs). Volumes made here open with cryptsetup and vice versa.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use veil_agent::luks2::format::{FormatOptions, HeaderWriter, KdfParams};
use veil_agent::luks2::{Kdf, KdfLimits, Volume};
use zeroize::Zeroizing;

use crate::outfile::{self, Access, Output};
use crate::secret;
use crate::volfile::{self, VolumeFile};

#[derive(Subcommand)]
pub enum LuksCommand {
    /// Create a LUKS2 volume (aes-xts-plain64) in an image file, creating the file with
    /// --size if it does not exist. Refuses to overwrite an existing LUKS header.
    Format {
        /// The image file.
        image: PathBuf,
        /// Create the image with this many bytes (e.g. 64M, 1G).
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        #[command(flatten)]
        layout: Layout,
        #[command(flatten)]
        key: KeySource,
        #[command(flatten)]
        kdf: KdfArgs,
        /// Format even if the image already holds a LUKS header (destroys its data).
        #[arg(long)]
        force: bool,
        /// Print {"uuid": ...} instead of the bare UUID.
        #[arg(long)]
        json: bool,
    },
    /// Print the header: UUID, segments, keyslots, digests, tokens. Nothing secret.
    Dump {
        /// The image file.
        image: PathBuf,
        #[command(flatten)]
        part: PartArg,
        /// Print the metadata as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a passphrase: unlock a keyslot and report which one and how long its KDF took.
    Open {
        /// The image file.
        image: PathBuf,
        #[command(flatten)]
        part: PartArg,
        #[command(flatten)]
        key: KeySource,
        /// Only try this keyslot.
        #[arg(long)]
        keyslot: Option<u32>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a keyslot with a new passphrase (or replace one with --replace).
    AddKey {
        /// The image file.
        image: PathBuf,
        #[command(flatten)]
        part: PartArg,
        #[command(flatten)]
        key: KeySource,
        /// File holding the new passphrase (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        /// Keyslot number for the new passphrase (default: lowest free).
        #[arg(long)]
        keyslot: Option<u32>,
        /// Replace the keyslot given with --keyslot.
        #[arg(long, requires = "keyslot")]
        replace: bool,
        #[command(flatten)]
        kdf: KdfArgs,
        /// Print {"keyslot": N, "replaced": bool} instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// List, add or remove tokens (JSON objects kept in the header, e.g. sealed secrets).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Encrypt a plain image into a new LUKS2 image (16 MiB header, then the data).
    Encrypt {
        /// The plain image.
        #[arg(long = "in")]
        input: PathBuf,
        /// The LUKS2 image to create.
        #[arg(long = "out")]
        output: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        layout: Layout,
        #[command(flatten)]
        key: KeySource,
        #[command(flatten)]
        kdf: KdfArgs,
        /// Print {"uuid": ..., "bytes": ...} instead of the bare UUID.
        #[arg(long)]
        json: bool,
    },
    /// Decrypt the data of a LUKS2 image into a new plain image.
    Decrypt {
        /// The LUKS2 image.
        #[arg(long = "in")]
        input: PathBuf,
        /// The plain image to create (mode 0600: it holds the plaintext).
        #[arg(long = "out")]
        output: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        key: KeySource,
        /// Print {"uuid": ..., "bytes": N} (the plaintext's length) when done.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// List the tokens: one line each, number and JSON (with --json: one JSON object
    /// {"tokens": {"N": {...}}}).
    List {
        /// The image file.
        image: PathBuf,
        #[command(flatten)]
        part: PartArg,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Add a token from a JSON file (an object with a "type"), bound to keyslots.
    Add {
        /// The image file.
        image: PathBuf,
        #[command(flatten)]
        part: PartArg,
        /// The token, a JSON file (`-` reads stdin).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Keyslots the token belongs to (repeat for several).
        #[arg(long = "keyslot")]
        keyslots: Vec<u32>,
        /// Token number (default: lowest free).
        #[arg(long)]
        id: Option<u32>,
        /// The master secret that opens the volume (a file, or a kms:// URI inline). Required
        /// when the volume is a veil-boot header (`--part veil-boot`, or a volume carrying the
        /// boot bundle's token), and checked to open it before anything is written.
        #[arg(long, value_name = "FILE")]
        secret: Option<PathBuf>,
        /// Print {"token": N} instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Remove a token.
    Remove {
        /// The image file.
        image: PathBuf,
        #[command(flatten)]
        part: PartArg,
        /// Token number.
        #[arg(long)]
        id: u32,
        /// The master secret that opens the volume (a file, or a kms:// URI inline). Required
        /// when the volume is a veil-boot header (`--part veil-boot`, or a volume carrying the
        /// boot bundle's token), and checked to open it before anything is written.
        #[arg(long, value_name = "FILE")]
        secret: Option<PathBuf>,
        /// Print {"token": N} instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

/// Which volume of the image file.
#[derive(Args)]
pub struct PartArg {
    /// The GPT partition (by name) holding the volume, for a whole disk such as `veil image
    /// build` makes (veil-boot, veil-root); without it the file is the volume.
    #[arg(long, value_name = "NAME")]
    part: Option<String>,
}

impl PartArg {
    fn open(&self, image: &Path, write: bool) -> Result<VolumeFile> {
        volfile::open(image, self.part.as_deref(), write)
    }
}

/// Where the passphrase comes from.
#[derive(Args)]
pub struct KeySource {
    /// Passphrase file, used byte for byte (`-` reads stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    key_file: Option<PathBuf>,
    /// Use the disk key derived from this master secret for the volume's UUID (what the
    /// firmware does): a constellation-mastersecret.json, or a kms://cluster-kms?key=...&salt=...
    /// URI inline (visible to other users in the process list) or in a file.
    #[arg(long, value_name = "FILE")]
    secret: Option<PathBuf>,
}

/// Layout of a new volume.
#[derive(Args)]
pub struct Layout {
    /// Encryption sector size (512 or 4096).
    #[arg(long, default_value_t = 4096)]
    sector_size: u32,
    /// Volume label.
    #[arg(long, default_value = "")]
    label: String,
    /// Volume UUID (default: random).
    #[arg(long)]
    uuid: Option<String>,
}

/// KDF of a new keyslot.
#[derive(Args)]
pub struct KdfArgs {
    /// pbkdf2, argon2i or argon2id. PBKDF2 at 1000 iterations is the default: veilboot's
    /// passphrases are random 256-bit keys, so a slow KDF only slows the boot.
    #[arg(long, default_value = "pbkdf2")]
    pbkdf: String,
    /// PBKDF2 iterations.
    #[arg(long, default_value_t = 1000)]
    iterations: u32,
    /// Argon2 memory in KiB.
    #[arg(long, default_value_t = 65536)]
    argon2_memory: u32,
    /// Argon2 time cost.
    #[arg(long, default_value_t = 4)]
    argon2_time: u32,
    /// Argon2 lanes.
    #[arg(long, default_value_t = 1)]
    argon2_cpus: u32,
}

impl KdfArgs {
    fn params(&self) -> Result<KdfParams> {
        Ok(match self.pbkdf.as_str() {
            "pbkdf2" => KdfParams::Pbkdf2 { hash: "sha256".into(), iterations: self.iterations.max(1000) },
            "argon2i" | "argon2id" => KdfParams::Argon2 {
                id: self.pbkdf == "argon2id",
                time: self.argon2_time,
                memory_kib: self.argon2_memory,
                cpus: self.argon2_cpus,
            },
            other => crate::usage_bail!("--pbkdf {other}: expected pbkdf2, argon2i or argon2id"),
        })
    }
}

/// Parse sizes like 4096, 64K, 16M, 2G.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.trim().to_ascii_uppercase().chars().last() {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size (e.g. 4096, 64M, 1G)"))
}

/// The host's random source for the LUKS2 writer.
pub fn host_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // No weak fallback: stop.
        eprintln!("veil: error: the system random number generator failed: {e}");
        std::process::exit(1);
    }
}

fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut buf).context("reading the passphrase from stdin")?;
    } else {
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .with_context(|| format!("reading {}", path.display()))?;
    }
    if buf.is_empty() {
        bail!("the passphrase in {} is empty", path.display());
    }
    Ok(buf)
}

impl KeySource {
    /// Check the key source before anything is created: one given, the secret readable and
    /// valid, the key file present.
    fn check(&self) -> Result<()> {
        match (&self.key_file, &self.secret) {
            (Some(f), None) if f != Path::new("-") => {
                std::fs::metadata(f).with_context(|| format!("reading {}", f.display()))?;
                Ok(())
            }
            (Some(_), None) => Ok(()),
            (None, Some(s)) => secret::load(s).map(drop),
            _ => crate::usage_bail!("give the passphrase with --key-file FILE or derive it with --secret FILE"),
        }
    }

    /// The passphrase for the volume with this UUID.
    fn passphrase(&self, uuid: &str) -> Result<Zeroizing<Vec<u8>>> {
        match (&self.key_file, &self.secret) {
            (Some(f), None) => read_key_file(f),
            (None, Some(s)) => {
                let master = secret::load(s)?;
                let key = master.disk_key(uuid).with_context(|| format!("volume UUID {uuid}"))?;
                Ok(Zeroizing::new(key.to_vec()))
            }
            _ => crate::usage_bail!("give the passphrase with --key-file FILE or derive it with --secret FILE"),
        }
    }
}

/// Apply a LUKS2 writer's byte ranges to a volume that starts at `base` in `file`.
pub fn write_all_at(file: &File, base: u64, writes: Vec<(u64, Zeroizing<Vec<u8>>)>) -> Result<()> {
    for (off, bytes) in writes {
        file.write_all_at(&bytes, base + off).context("writing the LUKS2 header")?;
    }
    file.sync_all().context("syncing the image")
}

fn format_options(layout: &Layout, kdf: &KdfArgs) -> Result<FormatOptions> {
    Ok(FormatOptions {
        uuid: layout.uuid.clone(),
        label: layout.label.clone(),
        sector_size: layout.sector_size,
        kdf: kdf.params()?,
        ..FormatOptions::default()
    })
}

/// Format a new volume header into `file`; returns the UUID and the volume key.
fn format_into(file: &File, opts: &FormatOptions, key: &KeySource) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let mut opts = opts.clone();
    let uuid = match &opts.uuid {
        Some(u) => veil_agent::keys::normalize_uuid(u)?,
        None => veil_agent::luks2::format::random_uuid(&mut host_random),
    };
    opts.uuid = Some(uuid.clone());
    let passphrase = key.passphrase(&uuid)?;
    let mut volume_key = Zeroizing::new(vec![0u8; opts.key_size]);
    host_random(&mut volume_key);
    let writer = HeaderWriter::format(&opts, &volume_key, &passphrase, &mut host_random)?;
    write_all_at(file, 0, writer.commit(&mut host_random)?)?;
    Ok((uuid, volume_key))
}

/// The layout of a new volume, checked (UUID, sector size, KDF) before any file is made.
fn checked_options(layout: &Layout, kdf: &KdfArgs) -> Result<FormatOptions> {
    let mut opts = format_options(layout, kdf)?;
    if !matches!(opts.sector_size, 512 | 1024 | 2048 | 4096) {
        crate::usage_bail!("--sector-size {}: expected 512, 1024, 2048 or 4096", opts.sector_size);
    }
    if let Some(u) = &opts.uuid {
        opts.uuid =
            Some(veil_agent::keys::normalize_uuid(u).map_err(|e| crate::cli_error::usage(format!("--uuid: {e}")))?);
    }
    Ok(opts)
}

fn format(
    image: &Path,
    size: Option<u64>,
    layout: &Layout,
    key: &KeySource,
    kdf: &KdfArgs,
    force: bool,
    json: bool,
) -> Result<()> {
    // Everything that can be checked is checked before the file is created.
    let opts = checked_options(layout, kdf)?;
    let needed = 2 * opts.metadata_size + opts.keyslots_size + u64::from(opts.sector_size);
    key.check()?;
    let exists = image.exists();
    let file = match (exists, size) {
        (false, Some(n)) => {
            if n < needed {
                crate::usage_bail!("--size {n}: a LUKS2 volume needs at least {needed} bytes (e.g. --size 32M)");
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(image)
                .with_context(|| format!("cannot create {}", image.display()))?;
            f.set_len(n)?;
            f
        }
        (false, None) => crate::usage_bail!("{} does not exist; give --size to create it", image.display()),
        (true, _) => {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(image)
                .with_context(|| format!("cannot open {}", image.display()))?;
            if !force && Volume::load(&mut f).is_ok() {
                bail!("{} already holds a LUKS2 volume; --force destroys it", image.display());
            }
            if f.metadata()?.len() < needed {
                bail!("{} is smaller than the {needed} bytes a LUKS2 volume needs", image.display());
            }
            if size.is_some() {
                eprintln!("veil: {} exists: --size ignored", image.display());
            }
            f
        }
    };
    match format_into(&file, &opts, key) {
        Ok((uuid, _key)) => {
            if json {
                println!("{}", serde_json::json!({ "uuid": uuid }));
            } else {
                println!("{uuid}");
            }
            Ok(())
        }
        Err(e) => {
            if !exists {
                let _ = std::fs::remove_file(image); // the file this command created
            }
            Err(e)
        }
    }
}

pub fn run(cmd: LuksCommand) -> Result<()> {
    match cmd {
        LuksCommand::Format { image, size, layout, key, kdf, force, json } => {
            format(&image, size, &layout, &key, &kdf, force, json)
        }
        LuksCommand::Dump { image, part, json } => dump(&image, &part, json),
        LuksCommand::Open { image, part, key, keyslot, json } => {
            let mut vf = part.open(&image, false)?;
            let volume = vf.load()?;
            let passphrase = key.passphrase(volume.uuid())?;
            let start = Instant::now();
            let limits = KdfLimits::default();
            let slot = match keyslot {
                Some(n) => volume.unlock_keyslot(&mut vf, n, &passphrase, &limits).map(|_| n),
                None => volume.unlock(&mut vf, &passphrase, &limits).map(|(n, _)| n),
            }
            .with_context(|| vf.name.clone())?;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            let kdf = kdf_name(volume.metadata().keyslots[&slot].kdf.as_ref());
            if json {
                println!(
                    "{}",
                    serde_json::json!({"uuid": volume.uuid(), "keyslot": slot, "kdf": kdf, "unlock_ms": ms})
                );
            } else {
                println!("keyslot {slot} ({kdf}) opened in {ms:.1} ms");
            }
            Ok(())
        }
        LuksCommand::AddKey { image, part, key, new_key_file, keyslot, replace, kdf, json } => {
            let params = kdf.params()?;
            let mut vf = part.open(&image, true)?;
            let volume = vf.load()?;
            let passphrase = key.passphrase(volume.uuid())?;
            let (_, volume_key) =
                volume.unlock(&mut vf, &passphrase, &KdfLimits::default()).with_context(|| vf.name.clone())?;
            let new = read_key_file(&new_key_file)?;
            let mut w = HeaderWriter::edit(&volume)?;
            let slot = if replace {
                let n = keyslot.expect("clap requires it");
                w.replace_keyslot(n, &volume_key, &new, &params, &mut host_random)?;
                n
            } else {
                w.add_keyslot(&volume_key, &new, &params, keyslot, &mut host_random)?
            };
            vf.write(w.commit(&mut host_random)?)?;
            if json {
                println!("{}", serde_json::json!({"keyslot": slot, "replaced": replace}));
            } else {
                println!("keyslot {slot} {}", if replace { "replaced" } else { "added" });
            }
            Ok(())
        }
        LuksCommand::Token(t) => token(t),
        LuksCommand::Encrypt { input, output, force, layout, key, kdf, json } => {
            encrypt(&input, &output, force, &layout, &key, &kdf, json)
        }
        LuksCommand::Decrypt { input, output, force, key, json } => decrypt(&input, &output, force, &key, json),
    }
}

fn kdf_name(kdf: Option<&Kdf>) -> String {
    match kdf {
        Some(Kdf::Pbkdf2 { hash, iterations, .. }) => format!("pbkdf2-{hash}, {iterations} iterations"),
        Some(Kdf::Argon2 { id, time, memory_kib, cpus, .. }) => {
            format!("{}, time {time}, {memory_kib} KiB, {cpus} lanes", if *id { "argon2id" } else { "argon2i" })
        }
        Some(Kdf::Other(name)) => name.clone(),
        None => "none".into(),
    }
}

fn dump(image: &Path, part: &PartArg, json: bool) -> Result<()> {
    let mut vf = part.open(image, false)?;
    let volume = vf.load()?;
    let h = volume.header();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "uuid": volume.uuid(), "label": volume.label(), "seqid": h.seqid,
                "metadata_size": h.hdr_size, "checksum": h.checksum_alg, "metadata": volume.json()
            })
        );
        return Ok(());
    }
    let m = volume.metadata();
    println!("LUKS2 volume {}", vf.name);
    println!("  UUID:          {}", volume.uuid());
    println!("  label:         {}", if volume.label().is_empty() { "(none)" } else { volume.label() });
    println!("  epoch:         {}", h.seqid);
    println!("  metadata area: {} bytes, keyslots area: {} bytes", h.hdr_size, m.config.keyslots_size);
    if volume.other_copy_stale {
        println!("  note: the other header copy is damaged or older (cryptsetup would rewrite it)");
    }
    if !m.config.requirements.is_empty() {
        println!("  requirements:  {}", m.config.requirements.join(", "));
    }
    println!("segments:");
    for (n, s) in &m.segments {
        let size = match s.size {
            veil_agent::luks2::SegmentSize::Dynamic => "whole device".to_string(),
            veil_agent::luks2::SegmentSize::Bytes(b) => format!("{b} bytes"),
        };
        println!(
            "  {n}: {} at {} ({size}), {}, {}-byte sectors, iv_tweak {}",
            s.kind, s.offset, s.encryption, s.sector_size, s.iv_tweak
        );
    }
    println!("keyslots:");
    for (n, k) in &m.keyslots {
        println!(
            "  {n}: {} key {} bits, {}, area {} at {} ({} bytes)",
            k.kind,
            k.key_size * 8,
            kdf_name(k.kdf.as_ref()),
            k.area.encryption,
            k.area.offset,
            k.area.size
        );
    }
    println!("digests:");
    for (n, d) in &m.digests {
        println!("  {n}: {}-{} keyslots {:?} segments {:?}", d.kind, d.hash, d.keyslots, d.segments);
    }
    println!("tokens:");
    if m.tokens.is_empty() {
        println!("  (none)");
    }
    for (n, t) in &m.tokens {
        println!("  {n}: {} keyslots {:?}", t.kind, t.keyslots);
    }
    Ok(())
}

fn token(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::List { image, part, json } => {
            let mut vf = part.open(&image, false)?;
            let volume = vf.load()?;
            let tokens = &volume.metadata().tokens;
            if json {
                let all: serde_json::Map<String, serde_json::Value> = tokens
                    .iter()
                    .map(|(n, t)| Ok((n.to_string(), serde_json::from_str(&veil_agent::json::to_string(&t.json))?)))
                    .collect::<Result<_>>()?;
                println!("{}", serde_json::json!({ "tokens": all }));
                return Ok(());
            }
            if tokens.is_empty() {
                eprintln!("veil: {}: no tokens", vf.name);
            }
            for (n, t) in tokens {
                println!("{n}\t{}", serde_json::to_string(&t.json)?);
            }
            Ok(())
        }
        TokenCommand::Add { image, part, file, keyslots, id, secret, json } => {
            let text = if file == Path::new("-") {
                let mut t = String::new();
                std::io::stdin().read_to_string(&mut t).context("reading the token from stdin")?;
                t
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let token = veil_agent::json::from_str(&text)
                .with_context(|| format!("{} is not JSON (as a LUKS2 header takes it)", file.display()))?;
            let mut vf = part.open(&image, true)?;
            let volume = vf.load()?;
            check_veil_boot_edit(&part, &volume, &mut vf, secret.as_deref(), "token add")?;
            let mut w = HeaderWriter::edit(&volume)?;
            let n = w.add_token(token, &keyslots, id)?;
            vf.write(w.commit(&mut host_random)?)?;
            if json {
                println!("{}", serde_json::json!({ "token": n }));
            } else {
                println!("token {n} added");
            }
            Ok(())
        }
        TokenCommand::Remove { image, part, id, secret, json } => {
            let mut vf = part.open(&image, true)?;
            let volume = vf.load()?;
            check_veil_boot_edit(&part, &volume, &mut vf, secret.as_deref(), "token remove")?;
            let mut w = HeaderWriter::edit(&volume)?;
            w.remove_token(id)?;
            vf.write(w.commit(&mut host_random)?)?;
            if json {
                println!("{}", serde_json::json!({ "token": id }));
            } else {
                println!("token {id} removed");
            }
            Ok(())
        }
    }
}

/// A veil-boot header (its partition named, or a volume carrying the boot bundle's token) is
/// changed only with the master secret that opens it, checked first as `veil seal` checks it
/// (issue 36): a token edit on the wrong disk's header, or by someone without the disk's
/// secret, would leave a disk whose next boot cannot unseal or open it. Other volumes need no
/// secret (`--secret`, when given, is checked all the same).
fn check_veil_boot_edit(
    part: &PartArg,
    volume: &Volume,
    vf: &mut VolumeFile,
    secret: Option<&Path>,
    what: &str,
) -> Result<()> {
    let veil_boot = part.part.as_deref() == Some("veil-boot")
        || volume.metadata().tokens.values().any(|t| t.kind == veil_agent::bundle::TOKEN_TYPE);
    match secret {
        Some(path) => crate::seal::check_opens(&secret::load(path)?, volume, vf, path),
        None if veil_boot => crate::usage_bail!(
            "{}: is a veil-boot header; `veil luks {what}` changes one only with --secret FILE, the master secret that opens it (checked first, as veil seal does); nothing was written",
            vf.name
        ),
        None => Ok(()),
    }
}

/// Bytes per read/encrypt/write step of the streaming commands.
const CHUNK: usize = 4 << 20;

pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

pub fn report(what: &str, bytes: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{what} {bytes} bytes in {secs:.2} s: {:.0} MB/s", bytes as f64 / secs / 1e6);
}

/// Stream `len` bytes from `src` at `src_off` to `dst` at `dst_off` through `op`.
pub fn stream(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
    what: &str,
    mut op: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<()> {
    let bar = progress(len, what);
    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..n];
        let avail = src.metadata()?.len().saturating_sub(src_off + pos).min(n as u64) as usize;
        src.read_exact_at(&mut chunk[..avail], src_off + pos).context("reading the input")?;
        chunk[avail..].fill(0); // zero-pad a partial last sector
        op(pos, chunk)?;
        dst.write_all_at(chunk, dst_off + pos).context("writing the output")?;
        pos += n as u64;
        bar.set_position(pos);
    }
    bar.finish_and_clear();
    dst.sync_all().context("syncing the output")
}

fn encrypt(
    input: &Path,
    output: &Path,
    force: bool,
    layout: &Layout,
    key: &KeySource,
    kdf: &KdfArgs,
    json: bool,
) -> Result<()> {
    let opts = checked_options(layout, kdf)?;
    key.check()?;
    let src = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let plain_len = src.metadata()?.len();
    let sector = u64::from(opts.sector_size);
    let data_len = plain_len.div_ceil(sector).max(1) * sector;
    let data_offset = 2 * opts.metadata_size + opts.keyslots_size;
    let out = Output::create(output, force, Access::Public, "--force")?;
    let dst = out.file();
    dst.set_len(data_offset + data_len)?;
    let (uuid, volume_key) = format_into(dst, &opts, key)?;
    let volume = Volume::load(&mut dst.try_clone()?)?;
    let (seg, cipher) = volume.data_cipher(&volume_key)?;
    eprintln!("volume {uuid}: encrypting {plain_len} bytes ({} backend)", cipher.backend_name());
    let start = Instant::now();
    stream(&src, 0, dst, seg.offset, data_len, "encrypt", |pos, chunk| {
        cipher.encrypt_sectors(seg.iv_sector(pos), chunk).map_err(Into::into)
    })?;
    out.commit()?;
    report("encrypted", data_len, start);
    if json {
        println!("{}", serde_json::json!({ "uuid": uuid, "bytes": data_offset + data_len }));
    } else {
        println!("{uuid}");
    }
    Ok(())
}

fn decrypt(input: &Path, output: &Path, force: bool, key: &KeySource, json: bool) -> Result<()> {
    outfile::check_free(output, force, "--force")?;
    let mut src = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let volume = Volume::load(&mut src).with_context(|| input.display().to_string())?;
    let passphrase = key.passphrase(volume.uuid())?;
    let (_, volume_key) =
        volume.unlock(&mut src, &passphrase, &KdfLimits::default()).with_context(|| input.display().to_string())?;
    let (seg, cipher) = volume.data_cipher(&volume_key)?;
    let len = seg.len(src.metadata()?.len());
    let out = Output::create(output, force, Access::Private, "--force")?;
    let start = Instant::now();
    stream(&src, seg.offset, out.file(), 0, len, "decrypt", |pos, chunk| {
        cipher.decrypt_sectors(seg.iv_sector(pos), chunk).map_err(Into::into)
    })?;
    out.commit()?;
    report("decrypted", len, start);
    if json {
        println!("{}", serde_json::json!({ "uuid": volume.uuid(), "bytes": len }));
    }
    Ok(())
}
