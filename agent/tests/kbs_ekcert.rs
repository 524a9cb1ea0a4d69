//! EK certificates against the TCG EK Credential Profile (for TPM Family 2.0, section 3.2), one
//! rule at a time: certificates made by OpenSSL (not by veilboot's code), an honest EK
//! certificate shaped like the ones swtpm and TPM vendors issue, and for each rule one that
//! breaks only that rule. agent::tpm::ekcert::verify must accept the first and refuse each
//! other with its own reason.
use std::path::Path;
use std::process::Command;

use veil_agent::tpm::ekcert;

/// The Subject Alternative Name of an EK certificate: a directoryName with
/// tcg-at-tpmManufacturer (2.23.133.2.1) = "id:00001014", DER (OpenSSL's config cannot name
/// that attribute).
const SAN_TPM_MANUFACTURER: &str = "301CA41A301831163014060567810502010C0B69643a3030303031303134";

const CA_CNF: &str = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = test EK root\n\
[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n\
[notca]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
[nocertsign]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,digitalSignature\n";

fn openssl(dir: &Path, args: &str) {
    let o = Command::new("openssl").args(args.split(' ')).current_dir(dir).output().expect("running openssl");
    assert!(o.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The EK certificate's extensions for `case`: the honest set with one rule broken.
fn ek_extensions(case: &str) -> String {
    let mut lines = vec![
        "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,keyEncipherment",
        "extendedKeyUsage = 2.23.133.8.1",
    ];
    let san = format!("2.5.29.17 = critical,DER:{SAN_TPM_MANUFACTURER}");
    lines.push(&san);
    let drop = |lines: &mut Vec<&str>, prefix: &str| lines.retain(|l| !l.starts_with(prefix));
    match case {
        "honest" => {}
        "no-key-usage" => drop(&mut lines, "keyUsage"),
        "key-usage-not-critical" => {
            drop(&mut lines, "keyUsage");
            lines.push("keyUsage = keyEncipherment");
        }
        "signing-key" => {
            drop(&mut lines, "keyUsage");
            lines.push("keyUsage = critical,digitalSignature");
        }
        "cert-sign" => {
            drop(&mut lines, "keyUsage");
            lines.push("keyUsage = critical,keyEncipherment,keyCertSign");
        }
        "ca" => {
            drop(&mut lines, "basicConstraints");
            lines.push("basicConstraints = critical,CA:TRUE");
        }
        "no-ek-marker" => drop(&mut lines, "extendedKeyUsage"),
        "other-eku" => {
            drop(&mut lines, "extendedKeyUsage");
            lines.push("extendedKeyUsage = serverAuth");
        }
        "no-san" => drop(&mut lines, "2.5.29.17"),
        other => panic!("no case {other}"),
    }
    format!("[ext]\n{}\n", lines.join("\n"))
}

/// (EK certificate, root) DER: a root made with `root_ext` valid `root_days`, an EK
/// certificate with the extensions of `case` valid 3650 days.
fn make(dir: &Path, case: &str, root_ext: &str, root_days: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    std::fs::write(dir.join("ca.cnf"), CA_CNF).unwrap();
    std::fs::write(dir.join("ek.cnf"), ek_extensions(case)).unwrap();
    veil_testkit::tool("openssl", "apt-get install openssl")?;
    openssl(
        dir,
        &format!(
            "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days {root_days} -config ca.cnf -extensions {root_ext} -sha256"
        ),
    );
    openssl(dir, "req -new -newkey rsa:2048 -nodes -keyout ek.key -subj /CN=ek -out ek.csr");
    openssl(
        dir,
        "x509 -req -in ek.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 3650 -sha256 -extfile ek.cnf -extensions ext -out ek.pem",
    );
    let der = |f: &str| ekcert::pem_to_der(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
    Some((der("ek.pem"), der("ca.pem")))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn check(ek_cert: &[u8], root: &[u8], at: u64) -> Result<(), String> {
    let ek = ekcert::certified_key(ek_cert)?;
    ekcert::verify(ek_cert, &ek, &[], root, at)
}

#[test]
fn an_ek_certificate_of_the_profile_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ek, root)) = make(dir.path(), "honest", "ca", "30") else { return };
    check(&ek, &root, now()).unwrap();
}

#[test]
fn each_ek_profile_rule_refuses_its_own_breach() {
    for (case, reason) in [
        ("no-key-usage", "no Key Usage"),
        ("key-usage-not-critical", "Key Usage is not critical"),
        ("signing-key", "lacks keyEncipherment"),
        ("cert-sign", "allows keyCertSign"),
        ("ca", "it is a CA certificate"),
        ("no-ek-marker", "no EK certificate marker"),
        ("other-eku", "no EK certificate marker"),
        ("no-san", "does not name the TPM"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let Some((ek, root)) = make(dir.path(), case, "ca", "30") else { return };
        let e = check(&ek, &root, now()).unwrap_err();
        assert!(e.contains(reason), "{case}: wanted {reason:?}, got {e:?}");
    }
}

#[test]
fn validity_is_checked_at_the_time_given() {
    let dir = tempfile::tempdir().unwrap();
    // The root is valid 2 days, the EK certificate 3650.
    let Some((ek, root)) = make(dir.path(), "honest", "ca", "2") else { return };
    let day = 86_400;
    check(&ek, &root, now()).unwrap();
    // Before both were issued.
    let e = check(&ek, &root, now() - 2 * day).unwrap_err();
    assert!(e.contains("EK certificate: not valid before"), "{e}");
    // The EK certificate still valid, its CA expired.
    let e = check(&ek, &root, now() + 3 * day).unwrap_err();
    assert!(e.contains("CA certificate") && e.contains("expired"), "{e}");
    // Both expired.
    let e = check(&ek, &root, now() + 3700 * day).unwrap_err();
    assert!(e.contains("EK certificate: expired"), "{e}");
}

#[test]
fn the_issuer_must_be_a_ca_that_signs_certificates() {
    for (root_ext, reason) in [("notca", "not a CA"), ("nocertsign", "lacks keyCertSign")] {
        let dir = tempfile::tempdir().unwrap();
        let Some((ek, root)) = make(dir.path(), "honest", root_ext, "30") else { return };
        let e = check(&ek, &root, now()).unwrap_err();
        assert!(e.contains(reason), "{root_ext}: wanted {reason:?}, got {e:?}");
    }
}
