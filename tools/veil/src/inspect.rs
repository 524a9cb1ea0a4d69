//! `veil image inspect`: what a built disk holds, without opening anything: its GPT
//! partitions, each LUKS2 volume's UUID, keyslots and tokens (the sealed secrets the firmware
//! can unseal: `veil-tpm2`, `systemd-tpm2`, `veil-snp`), and the boot target the `veil-bundle`
//! token names. With --secret, whether that secret's disk key opens each volume (a wrong
//! secret is the usual reason a disk does not boot).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};
use veil_agent::luks2::{KdfLimits, Luks2ErrorKind, Volume};

use crate::volfile;

#[derive(Args)]
pub struct InspectArgs {
    /// The disk image (`veil image build`).
    disk: PathBuf,
    /// Also check whether this master secret opens each volume (a file, or a kms:// URI).
    #[arg(long)]
    secret: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One partition's volume, as JSON.
fn volume_json(volume: &Volume) -> Value {
    let tokens: serde_json::Map<String, Value> =
        volume.metadata().tokens.iter().map(|(n, t)| (n.to_string(), json!(t.kind))).collect();
    let keyslots: Vec<u32> = volume.metadata().keyslots.keys().copied().collect();
    json!({"uuid": volume.uuid(), "label": volume.label(), "keyslots": keyslots, "tokens": tokens})
}

pub fn run(args: InspectArgs) -> Result<()> {
    let secret = args.secret.as_deref().map(crate::secret::load).transpose()?;
    let mut file = std::fs::File::open(&args.disk).with_context(|| format!("cannot open {}", args.disk.display()))?;
    let gpt = volfile::read_gpt(&mut file, &args.disk)?;
    let mut parts = Vec::new();
    let mut boot_target = Value::Null;
    for p in &gpt.partitions {
        let mut entry = json!({"name": p.name, "offset": p.offset(), "size": p.size()});
        let mut vf = volfile::open(&args.disk, Some(&p.name), false)?;
        match Volume::load(&mut vf) {
            Ok(volume) => {
                entry["luks2"] = volume_json(&volume);
                if let Some(secret) = &secret {
                    let key = secret.disk_key(volume.uuid())?;
                    entry["secret_opens"] = match volume.unlock(&mut vf, key.as_ref(), &KdfLimits::default()) {
                        Ok(_) => json!(true),
                        Err(e) if matches!(e.kind(), Luks2ErrorKind::WrongPassphrase) => json!(false),
                        Err(e) => return Err(anyhow::Error::new(e).context(vf.name.clone())),
                    };
                }
                if let Some(token) = veil_agent::bundle::find_token(volume.json())? {
                    let m = &token.manifest;
                    let mut t = json!({
                        "kernel": {"size": m.kernel.size, "sha384": m.kernel.sha384},
                        "initrd": {"size": m.initrd.size, "sha384": m.initrd.sha384},
                        "cmdline": m.cmdline,
                        "root_uuid": m.root_uuid,
                        "measurement_salt": hex::encode(&token.measurement_salt),
                        "init_data": token.init_data.is_some(),
                    });
                    if let Some(b) = &m.bound {
                        t["bundle_version"] = json!(b.version);
                        t["never_seal"] = json!(b.never_seal);
                    }
                    if let Some(secret) = &secret {
                        t["cluster_id"] = json!(hex::encode(secret.cluster_id(&token.measurement_salt).0));
                    }
                    boot_target = t;
                }
            }
            Err(e) => entry["not_luks2"] = json!(e.to_string()),
        }
        parts.push(entry);
    }
    let doc = json!({
        "disk": args.disk.display().to_string(),
        "disk_guid": gpt.disk_guid.to_string(),
        "partitions": parts,
        "boot_target": boot_target,
    });
    if args.json {
        println!("{doc}");
    } else {
        print_text(&doc);
    }
    Ok(())
}

fn print_text(doc: &Value) {
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    println!("disk {} (GPT, disk GUID {})", s(&doc["disk"]), s(&doc["disk_guid"]));
    for p in doc["partitions"].as_array().into_iter().flatten() {
        println!("  {}: {} bytes at {}", s(&p["name"]), p["size"], p["offset"]);
        if let Some(l) = p.get("luks2") {
            let tokens: Vec<String> =
                l["tokens"].as_object().into_iter().flatten().map(|(n, t)| format!("{n} {}", s(t))).collect();
            println!("    LUKS2 {}, keyslots {}", s(&l["uuid"]), l["keyslots"]);
            println!("    tokens: {}", if tokens.is_empty() { "none".to_string() } else { tokens.join(", ") });
        } else {
            println!("    not LUKS2: {}", s(&p["not_luks2"]));
        }
        match p.get("secret_opens").and_then(Value::as_bool) {
            Some(true) => println!("    the master secret opens it"),
            Some(false) => println!("    the master secret does NOT open it (another cluster's secret?)"),
            None => {}
        }
    }
    let t = &doc["boot_target"];
    if t.is_null() {
        println!("no veil-bundle token: not a disk veilboot boots");
        return;
    }
    println!("boot target (veil-bundle token of veil-boot):");
    println!("  kernel  {} bytes, sha384 {}", t["kernel"]["size"], s(&t["kernel"]["sha384"]));
    println!("  initrd  {} bytes, sha384 {}", t["initrd"]["size"], s(&t["initrd"]["sha384"]));
    println!("  cmdline {}", t["cmdline"]);
    println!("  root volume {}", s(&t["root_uuid"]));
    println!("  measurement salt {}", s(&t["measurement_salt"]));
    if let Some(v) = t.get("bundle_version") {
        println!("  bundle version {v}");
    }
    if t["never_seal"] == true {
        println!("  never sealed locally (--never-seal): every boot asks the key broker");
    }
    if let Some(id) = t.get("cluster_id") {
        println!("  clusterID {} (with this master secret)", s(id));
    }
}
