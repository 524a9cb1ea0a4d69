//! `veil kbs serve`: a key broker that speaks the Trustee KBS protocol (RCAR, version 0.4.0)
//! over HTTP and releases the cluster's master secret to a veilboot firmware whose TPM quote
//! matches the reference measurements (the checks live in veil_agent::kbs::broker).
//!
//! The HTTP side (a thread per connection, deadlines, bounds) is [`http`].
//!
//! `veil kbs relay`: the untrusted bridge between a VM's virtio-console (QEMU's chardev
//! socket) and a broker's HTTP endpoint. It reads length-prefixed JSON frames
//! (`{"method","path","body"}`), makes the HTTP request, keeps the session cookie, and
//! sends back `{"status","body"}`. It needs no trust: the firmware's nonce, report data and
//! JWE make its tampering detectable. It works the same against a real Trustee KBS.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use veil_agent::kbs::broker::{self, Broker, BrokerConfig};

#[path = "kbs_http.rs"]
mod http;
use veil_agent::kbs::frame;
use veil_agent::tpm::ekcert;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum KbsCommand {
    /// Run the key broker (HTTP, Trustee KBS protocol 0.4.0, TEEs "tpm", "snp" and "tdx").
    Serve(Box<ServeArgs>),
    /// Relay a VM's virtio-console frames to a key broker over HTTP. It serves one VM
    /// connection and exits when the VM closes the channel (start one per boot).
    Relay(RelayArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: one the OS picks; the address bound is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The master secret to release (constellation-mastersecret.json, a kms:// URI file, or
    /// the URI inline).
    #[arg(long)]
    secret: PathBuf,
    /// TPM: reference PCR values, Constellation's measurements JSON as `veil measure
    /// --platform tpm` writes it (without --after-unseal: the quote is taken before PCR 15
    /// holds the clusterID). With --ek-ca, the broker accepts TEE "tpm".
    #[arg(long, requires = "ek_ca")]
    measurements: Option<PathBuf>,
    /// TPM: the root CA of EK certificates (PEM). For swtpm: /var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem.
    #[arg(long, value_name = "PEM", requires = "measurements")]
    ek_ca: Option<PathBuf>,
    /// An intermediate CA between the root and the EK certificate (PEM; repeat, issuer of
    /// the EK certificate first). For swtpm: /var/lib/swtpm-localca/issuercert.pem.
    #[arg(long, value_name = "PEM")]
    ek_intermediate: Vec<PathBuf>,
    /// TPM: the registry of TPMs released to: each VM's AK or EK public key, as PEM PUBLIC KEY
    /// blocks (`veil tpm ak` / `veil tpm ek`, concatenated), or Trustee's form, a JSON object
    /// whose "trusted_aks" lists base64 DER keys (`veil measure --trustee-dir`'s
    /// reference-values.json). Without it, TPM evidence is refused.
    #[arg(long, value_name = "FILE", conflicts_with = "any_tpm_under_ca")]
    tpm_registry: Option<PathBuf>,
    /// TPM: release to ANY TPM whose EK certificate chains to --ek-ca and whose PCRs match,
    /// with no registry. PCR values are extends of public inputs, so every TPM under that CA
    /// can reproduce them (swtpm's local CA signs every vTPM of the host): use only where
    /// every such TPM is trusted.
    #[arg(long)]
    any_tpm_under_ca: bool,
    /// Seconds a client has to send one whole request; a slower one is cut off (408) without
    /// holding up any other.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    request_timeout: u64,
    /// Resource path the secret is served at (repository/type/tag).
    #[arg(long, default_value = veil_agent::kbs::client::DEFAULT_RESOURCE)]
    resource: String,
    #[command(flatten)]
    snp: crate::snp::SnpArgs,
    #[command(flatten)]
    tdx: crate::tdx::TdxArgs,
    /// SEV-SNP and TDX: also release to evidence sent without init-data (a launch bound to no
    /// boot target, HOST_DATA / MRCONFIGID zero). veilboot always sends its disk's init-data;
    /// without this flag such evidence is refused.
    #[arg(long)]
    allow_no_init_data: bool,
    /// SEV-SNP and TDX: refuse launches whose init-data names a bundle version below N
    /// (`veil image build --bundle-version`): an older bundle, rolled back by the host. No
    /// effect on TPM evidence (no init-data): its PCRs 4, 8 and 9 pin the bundle.
    #[arg(long, value_name = "N")]
    min_bundle_version: Option<u64>,
}

#[derive(Args)]
pub struct RelayArgs {
    /// The VM's virtio-console chardev socket (QEMU `-chardev socket,path=...,server=on`).
    #[arg(long)]
    socket: PathBuf,
    /// The broker's base URL (http://host:port).
    #[arg(long)]
    broker: String,
    /// How long to wait for the VM's socket to appear, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
}

pub fn run(cmd: KbsCommand) -> Result<()> {
    match cmd {
        KbsCommand::Serve(args) => serve(*args),
        KbsCommand::Relay(args) => relay(args),
    }
}

/// Largest request body the broker reads.
const MAX_BODY: u64 = frame::MAX_FRAME as u64;

fn read_pem(path: &PathBuf) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ekcert::pem_to_der(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The registry file: PEM PUBLIC KEY blocks, or JSON `{"trusted_aks": [base64 DER, ...]}`.
fn read_registry(path: &PathBuf) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let keys: Vec<Vec<u8>> = if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        v.get("trusted_aks")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("{}: no \"trusted_aks\" list", path.display()))?
            .iter()
            .map(|k| {
                k.as_str()
                    .and_then(|s| veil_agent::b64::STANDARD.decode(s).ok())
                    .ok_or_else(|| anyhow!("{}: a trusted_aks entry is not base64", path.display()))
            })
            .collect::<Result<_>>()?
    } else {
        let mut keys = Vec::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("-----BEGIN PUBLIC KEY-----") {
            keys.push(ekcert::pem_block(&rest[at..], "PUBLIC KEY").map_err(|e| anyhow!("{}: {e}", path.display()))?);
            rest = &rest[at + "-----BEGIN PUBLIC KEY-----".len()..];
        }
        keys
    };
    for k in &keys {
        broker::registry_key(k).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    if keys.is_empty() {
        bail!("{}: no public key (PEM PUBLIC KEY blocks from veil tpm ak / veil tpm ek)", path.display());
    }
    Ok(keys)
}

fn serve(args: ServeArgs) -> Result<()> {
    // HOST:PORT, checked before any file is read (an argument error, exit 2).
    if args.listen.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
        crate::usage_bail!(
            "--listen {:?}: expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free port)",
            args.listen
        );
    }
    // Served as given: the file's bytes, or the inline kms:// URI (the firmware reads both).
    let secret = Zeroizing::new(if crate::secret::is_inline(&args.secret) {
        args.secret.as_os_str().as_encoded_bytes().to_vec()
    } else {
        crate::secret::warn_if_readable(&args.secret);
        std::fs::read(&args.secret).with_context(|| format!("reading {}", args.secret.display()))?
    });
    veil_agent::keys::MasterSecret::parse(&secret)
        .map_err(|e| anyhow!("{}: {e}", crate::secret::display_name(&args.secret)))?;
    let reference = match &args.measurements {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let reference = broker::parse_measurements(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if reference.values().all(|r| r.warn_only) {
                bail!(
                    "{}: no PCR is enforced (all warnOnly): the broker would release the secret to any boot",
                    path.display()
                );
            }
            reference
        }
        None => Default::default(),
    };
    let tpm_trust = match (&args.tpm_registry, args.any_tpm_under_ca) {
        (Some(path), _) => broker::TpmTrust::Registered(read_registry(path)?),
        (None, true) => broker::TpmTrust::AnyTpmUnderCa,
        (None, false) if args.measurements.is_some() => bail!(
            "--measurements: give --tpm-registry FILE (each VM's AK or EK, from veil tpm ak / veil tpm ek); the PCR values alone can be reproduced by any TPM under --ek-ca (--any-tpm-under-ca accepts that)"
        ),
        (None, false) => broker::TpmTrust::Nobody,
    };
    match &tpm_trust {
        broker::TpmTrust::Registered(keys) => {
            eprintln!("veil kbs: TEE tpm: {} registered TPM key(s) (AK or EK)", keys.len())
        }
        broker::TpmTrust::AnyTpmUnderCa if args.measurements.is_some() => eprintln!(
            "veil kbs: TEE tpm: WARNING: no TPM registry: ANY TPM under the EK CA whose PCRs match gets the secret (--any-tpm-under-ca)"
        ),
        _ => {}
    }
    let snp = args.snp.policy()?;
    let tdx = args.tdx.policy()?;
    if let Some(reference) = tdx.as_ref().and_then(|p| p.reference.as_ref()) {
        let missing: Vec<String> =
            [1, 2].iter().filter(|&&n| reference.rtmr[n].is_none()).map(|n| format!("RTMR{n}")).collect();
        if !missing.is_empty() {
            bail!(
                "--tdx-reference gives no {} value: RTMR1 measures the boot bundle (kernel, initrd, command line) and RTMR2 the clusterID, so without both the broker would release to any boot target this ROM launches (write the file with `veil measure --platform tdx --image DISK`)",
                missing.join(" or ")
            );
        }
    }
    if args.min_bundle_version.is_some() && args.measurements.is_some() {
        eprintln!(
            "veil kbs: TEE tpm: WARNING: --min-bundle-version does not apply to tpm evidence (a TPM quote carries no init-data): pin the bundle with PCRs 4, 8 and 9 in --measurements"
        );
    }
    if args.measurements.is_none() && snp.is_none() && tdx.is_none() {
        bail!(
            "nothing to verify: give --measurements and --ek-ca (TEE tpm), --snp-reference (TEE snp), --tdx-reference and --tdx-collateral (TEE tdx), or several"
        );
    }
    if let Some(p) = &tdx {
        eprintln!(
            "veil kbs: TEE tdx: {} reference MRTD(s); TCB statuses accepted: {}{}",
            p.reference.as_ref().map(|r| r.mrtd.len()).unwrap_or(0),
            p.allowed_status.join(", "),
            if p.test_root { "; WARNING: a TEST root replaces Intel's (--tdx-test-root)" } else { "" }
        );
    }
    let config = BrokerConfig {
        snp,
        tdx,
        resources: [(args.resource.clone(), secret)].into(),
        reference,
        ek_root: args.ek_ca.as_ref().map(read_pem).transpose()?.unwrap_or_default(),
        ek_intermediates: args.ek_intermediate.iter().map(read_pem).collect::<Result<_>>()?,
        allow_no_init_data: args.allow_no_init_data,
        min_bundle_version: args.min_bundle_version,
        tpm_trust,
    };
    let mut enforced: Vec<String> =
        config.reference.iter().filter(|(_, r)| !r.warn_only).map(|(p, _)| p.to_string()).collect();
    if enforced.is_empty() {
        enforced.push(String::from("none (tpm refused)"));
    }
    if let Some(p) = &config.snp {
        eprintln!(
            "veil kbs: TEE snp: {} reference launch measurement(s){}",
            p.measurements.len(),
            if p.test_root.is_some() { "; WARNING: a TEST root replaces AMD's (--snp-test-root)" } else { "" }
        );
    }
    let broker = Broker::new(config, Box::new(|b: &mut [u8]| getrandom::fill(b).expect("the OS random source")));
    let listener =
        std::net::TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    // The bound address, not the requested one: with port 0 the OS picks it, and tests read
    // it from this line.
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| args.listen.clone());
    eprintln!(
        "veil kbs: listening on http://{bound} (Trustee KBS protocol {}; resource {}; PCRs {} enforced)",
        veil_agent::kbs::client::PROTOCOL_VERSION,
        args.resource,
        enforced.join(",")
    );
    let limits = http::Limits {
        read_deadline: Duration::from_secs(args.request_timeout.max(1)),
        write_timeout: Duration::from_secs(args.request_timeout.max(1)),
        max_connections: 256,
        max_connections_per_peer: 64,
        max_head: 16 << 10,
        max_body: MAX_BODY as usize,
    };
    http::serve(listener, std::sync::Arc::new(broker), limits, |line| eprintln!("veil kbs: {line}"));
    Ok(())
}

/// One request from the firmware, as framed.
struct Forward {
    method: String,
    path: String,
    body: Option<Vec<u8>>,
}

fn parse_forward(payload: &[u8]) -> Result<Forward> {
    let v: Value = serde_json::from_slice(payload).context("a frame from the VM that is not JSON")?;
    let method = v
        .get("method")
        .and_then(Value::as_str)
        .filter(|m| matches!(*m, "GET" | "POST"))
        .ok_or_else(|| anyhow!("a frame without method GET or POST"))?;
    let path = v
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| p.starts_with("/kbs/v0/") && !p.contains("..") && p.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| anyhow!("a frame whose path is not under /kbs/v0/"))?;
    let body = match v.get("body") {
        None | Some(Value::Null) => None,
        Some(b) => Some(serde_json::to_vec(b)?),
    };
    Ok(Forward { method: method.to_string(), path: path.to_string(), body })
}

fn relay(args: RelayArgs) -> Result<()> {
    let base = args.broker.trim_end_matches('/').to_string();
    if !base.starts_with("http://") {
        crate::usage_bail!(
            "--broker {base}: only http:// URLs, e.g. http://127.0.0.1:8080 (the relay is untrusted either way; put TLS in front of the broker if the network needs it)"
        );
    }
    let start = Instant::now();
    let mut vm = loop {
        match UnixStream::connect(&args.socket) {
            Ok(s) => break s,
            Err(e) if start.elapsed() > Duration::from_secs(args.wait) => {
                return Err(e).with_context(|| format!("connecting to {}", args.socket.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    eprintln!("veil kbs relay: {} <-> {base}", args.socket.display());
    let mut cookie: Option<String> = None;
    let mut decoder = frame::Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = vm.read(&mut buf).context("reading from the VM")?;
        if n == 0 {
            eprintln!("veil kbs relay: the VM closed the channel");
            return Ok(());
        }
        for &b in &buf[..n] {
            let Some(payload) = decoder.push(b).map_err(|e| anyhow!("{e}"))? else { continue };
            let reply = match parse_forward(&payload) {
                Ok(f) => forward(&agent, &base, &f, &mut cookie).unwrap_or_else(|e| {
                    eprintln!("veil kbs relay: {} {}: {e:#}", f.method, f.path);
                    json!({"status": 502, "body": format!("relay: the broker could not be reached: {e:#}")})
                }),
                Err(e) => json!({"status": 400, "body": format!("relay: {e:#}")}),
            };
            let bytes = serde_json::to_vec(&reply)?;
            vm.write_all(&frame::encode(&bytes).map_err(|e| anyhow!("{e}"))?).context("writing to the VM")?;
        }
    }
}

/// Make one HTTP request to the broker; the reply frame.
fn forward(agent: &ureq::Agent, base: &str, f: &Forward, cookie: &mut Option<String>) -> Result<Value> {
    let url = format!("{base}{}", f.path);
    let response = match (&*f.method, &f.body) {
        ("POST", body) => {
            let mut req = agent.post(&url).header("Content-Type", "application/json");
            if let Some(c) = cookie.as_deref() {
                req = req.header("Cookie", c);
            }
            req.send(body.as_deref().unwrap_or(b"{}"))?
        }
        _ => {
            let mut req = agent.get(&url);
            if let Some(c) = cookie.as_deref() {
                req = req.header("Cookie", c);
            }
            req.call()?
        }
    };
    let status = response.status().as_u16();
    if let Some(set) = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(broker::COOKIE))
    {
        *cookie = set.split(';').next().map(String::from);
    }
    let mut response = response;
    let body = response.body_mut().with_config().limit(MAX_BODY).read_to_vec()?;
    eprintln!("veil kbs relay: {} {} -> {status} ({} bytes)", f.method, f.path, body.len());
    Ok(json!({"status": status, "body": String::from_utf8_lossy(&body)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_forwards_only_kbs_requests() {
        let f = parse_forward(br#"{"method":"POST","path":"/kbs/v0/auth","body":{"a":1}}"#).unwrap();
        assert_eq!(
            (f.method.as_str(), f.path.as_str(), f.body.as_deref()),
            ("POST", "/kbs/v0/auth", Some(&br#"{"a":1}"#[..]))
        );
        assert!(parse_forward(br#"{"method":"GET","path":"/kbs/v0/resource/a/b/c"}"#).unwrap().body.is_none());
        for bad in [
            &br#"{"method":"DELETE","path":"/kbs/v0/auth"}"#[..],
            br#"{"method":"GET","path":"/etc/passwd"}"#,
            br#"{"method":"GET","path":"/kbs/v0/../x"}"#,
            b"nope",
        ] {
            assert!(parse_forward(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
