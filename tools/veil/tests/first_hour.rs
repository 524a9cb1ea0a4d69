//! An image builder's first hour (issue 36), one test per fixed item: exit codes (2 for
//! argument errors), messages and hints, nothing created before the inputs are checked, no
//! output overwritten without --force, 0600 for plaintext, `veil seal` refusing a secret that
//! does not open the disk, inspecting a built disk, the initrd check, completions and man pages.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use veil_agent::cpio::CpioWriter;

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil")).args(args).output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Assert exit status `code` and a message containing `text` on stderr.
fn fails(o: &Output, code: i32, text: &str) {
    assert_eq!(o.status.code(), Some(code), "stdout {} stderr {}", out(o), err(o));
    assert!(err(o).contains(text), "expected {text:?} in: {}", err(o));
}

/// The smallest bzImage setup header `veil image build` accepts (it does not boot).
fn fake_kernel() -> Vec<u8> {
    let mut k = vec![0u8; 0x2000];
    k[0x1F1] = 1; // setup_sects
    k[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
    k[0x201] = 0x66; // header end 0x268
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    k[0x211] = 1; // LOADED_HIGH
    k[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    k[0x234] = 1; // relocatable
    k[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    k
}

/// An initramfs like the demo's (opens the root with the key handed over) or a bare one.
fn initrd(fit: bool) -> Vec<u8> {
    let mut w = CpioWriter::new();
    if fit {
        w.file(
            "init",
            0o755,
            b"#!/bin/sh\ncryptsetup open --key-file /cryptroot/keyfiles/veil-root.key \"$dev\" root\n",
        );
        w.file("sbin/cryptsetup", 0o755, b"\x7fELF");
    } else {
        w.file("init", 0o755, b"#!/bin/sh\nexec /bin/sh\n");
    }
    w.finish()
}

/// A 1 MiB ROM with the GUID footer table (empty) at its end, like veilboot's; `dev` puts the
/// development ROM's warning in it (the release ROM names the fw_cfg file too, to ignore it).
fn fake_rom(dev: bool) -> Vec<u8> {
    fake_rom_of(dev, 1 << 20)
}

/// The same, `size` bytes long.
fn fake_rom_of(dev: bool, size: usize) -> Vec<u8> {
    let mut rom = vec![0xffu8; size];
    let end = rom.len() - 0x20;
    rom[end - 16..end].copy_from_slice(&veil_agent::snp::ovmf::FOOTER_GUID);
    rom[end - 18..end - 16].copy_from_slice(&18u16.to_le_bytes());
    if dev {
        rom[0x1000..0x1000 + 31].copy_from_slice(b"INSECURE DEVELOPMENT KEY SOURCE");
    }
    rom
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("vmlinuz"), fake_kernel()).unwrap();
        std::fs::write(d.join("good.cpio"), initrd(true)).unwrap();
        std::fs::write(d.join("bare.cpio"), initrd(false)).unwrap();
        std::fs::create_dir_all(d.join("rootfs/etc")).unwrap();
        std::fs::write(d.join("rootfs/etc/hostname"), "veil\n").unwrap();
        for name in ["secret.json", "other.json"] {
            let o = veil(&["secret", "new", "--out", p(&d.join(name))]);
            assert!(o.status.success(), "{}", err(&o));
        }
        Fixture { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// `veil image build` with the fixture's inputs and `extra` arguments.
    fn build(&self, initrd: &str, out: &str, extra: &[&str]) -> Output {
        let (k, i, r, s, o) =
            (self.path("vmlinuz"), self.path(initrd), self.path("rootfs"), self.path("secret.json"), self.path(out));
        let mut args =
            vec!["image", "build", "--kernel", p(&k), "--initrd", p(&i), "--rootfs", p(&r), "--secret", p(&s)];
        args.extend(["--out", p(&o)]);
        args.extend(extra);
        veil(&args)
    }
}

/// Blocker 3: `veil seal` with a master secret that does not open the disk replaced the working
/// token; now it is refused and the header is left as it was. (On the old code this seal
/// succeeded.) Also: `veil image inspect` and `--part` show the token that seal wrote.
#[test]
fn seal_refuses_a_secret_that_does_not_open_veil_boot() {
    let f = Fixture::new();
    let b = f.build("good.cpio", "disk.img", &[]);
    assert!(b.status.success(), "{}", err(&b));
    let disk = f.path("disk.img");
    let rom = f.path("rom.fd");
    std::fs::write(&rom, fake_rom(false)).unwrap();
    // TPM2B_PUBLIC of an ECC P-256 storage key (systemd's template) whose point is the
    // curve's generator.
    let mut public = Vec::new();
    public.extend_from_slice(&[0x00, 0x23, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x72, 0x00, 0x00]);
    public.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x00, 0x03, 0x00, 0x10]);
    public.extend_from_slice(&[0x00, 0x20]);
    public.extend(hex::decode("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296").unwrap());
    public.extend_from_slice(&[0x00, 0x20]);
    public.extend(hex::decode("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5").unwrap());
    let mut tpm2b = (public.len() as u16).to_be_bytes().to_vec();
    tpm2b.extend(public);
    let srk = f.path("srk.pub");
    std::fs::write(&srk, &tpm2b).unwrap();

    let before = std::fs::read(&disk).unwrap();
    // `veil seal --platform tpm` of `image` with the master secret file `secret`, and `extra`.
    let seal_image = |secret: &str, image: &std::path::Path, extra: &[&str]| {
        let secret = f.path(secret);
        let mut args =
            vec!["seal", "--platform", "tpm", "--parent-public", p(&srk), "--secret", p(&secret), "--rom", p(&rom)];
        args.extend(["--image", p(image)]);
        args.extend(extra);
        veil(&args)
    };
    let seal = |secret: &str| seal_image(secret, &disk, &[]);
    let refused = seal("other.json");
    fails(&refused, 1, "does not open");
    assert!(err(&refused).contains("nothing was written"), "{}", err(&refused));
    assert!(std::fs::read(&disk).unwrap() == before, "the disk changed");

    // A PEM where the TPM2B_PUBLIC belongs: named, without Rust's Debug text.
    let pem = f.path("srk.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let wrong = veil(&[
        "seal",
        "--platform",
        "tpm",
        "--parent-public",
        p(&pem),
        "--secret",
        p(&f.path("secret.json")),
        "--rom",
        p(&rom),
        "--image",
        p(&disk),
    ]);
    fails(&wrong, 1, "not a TPM2B_PUBLIC");
    assert!(err(&wrong).contains("tpm2_readpublic") && !err(&wrong).contains(" {"), "{}", err(&wrong));
    assert!(std::fs::read(&disk).unwrap() == before, "the disk changed");
    let tdx = veil(&[
        "seal",
        "--platform",
        "tdx",
        "--parent-public",
        p(&srk),
        "--secret",
        p(&f.path("secret.json")),
        "--rom",
        p(&rom),
        "--image",
        p(&disk),
    ]);
    fails(&tdx, 2, "TDX has no sealing key");

    let sealed = seal("secret.json");
    assert!(sealed.status.success(), "{}", err(&sealed));
    assert!(out(&sealed).contains("in veil-boot token 1"), "{}", out(&sealed));
    let json: serde_json::Value =
        serde_json::from_slice(&seal_image("secret.json", &disk, &["--json"]).stdout).unwrap();
    assert_eq!(json["token"], 1, "the old token replaced: {json}");
    assert_eq!(json["pcrs"], serde_json::json!([0, 4, 8, 9, 15]));

    // The token is visible without opening anything.
    let list = veil(&["luks", "token", "list", p(&disk), "--part", "veil-boot", "--json"]);
    assert!(list.status.success(), "{}", err(&list));
    let doc: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(doc["tokens"]["0"]["type"], "veil-bundle", "{doc}");
    assert_eq!(doc["tokens"]["1"]["type"], "veil-tpm2", "{doc}");
    let inspect = veil(&["image", "inspect", p(&disk), "--secret", p(&f.path("other.json"))]);
    assert!(inspect.status.success(), "{}", err(&inspect));
    let text = out(&inspect);
    assert!(text.contains("veil-boot:") && text.contains("tokens: 0 veil-bundle, 1 veil-tpm2"), "{text}");
    assert!(text.contains("does NOT open"), "{text}");
    let inspect = veil(&["image", "inspect", p(&disk), "--secret", p(&f.path("secret.json")), "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(doc["partitions"][0]["name"], "veil-boot");
    assert_eq!(doc["partitions"][0]["secret_opens"], true);
    assert_eq!(doc["partitions"][1]["secret_opens"], true);
    assert_eq!(doc["boot_target"]["cmdline"], "console=ttyS0");
    assert_eq!(doc["boot_target"]["root_uuid"], doc["partitions"][1]["luks2"]["uuid"]);
    assert_eq!((&doc["boot_target"]["bundle_version"], &doc["boot_target"]["never_seal"]), (&1.into(), &false.into()));

    // Issue 31, item 5: an image built --never-seal says so, and `veil seal` refuses it (its
    // firmware would never open the token) without writing a byte.
    let b = f.build("good.cpio", "never.img", &["--never-seal"]);
    assert!(b.status.success(), "{}", err(&b));
    let never = f.path("never.img");
    let inspect = veil(&["image", "inspect", p(&never), "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(doc["boot_target"]["never_seal"], true, "{doc}");
    assert!(out(&veil(&["image", "inspect", p(&never)])).contains("never sealed locally (--never-seal)"));
    let before = std::fs::read(&never).unwrap();
    let refused = seal_image("secret.json", &never, &[]);
    fails(&refused, 1, "was built --never-seal");
    assert!(std::fs::read(&never).unwrap() == before, "the disk changed");
}

/// Item 3, "every command that writes a header": `veil luks token add/remove` on a veil-boot
/// header needs the master secret that opens it and checks it first, as `veil seal` does; a
/// missing secret is an argument error (exit 2), a wrong one is refused (exit 1, with the
/// hint), and neither changes a byte of the disk. Other volumes need no secret.
#[test]
fn token_edits_on_veil_boot_need_the_secret_that_opens_it() {
    let f = Fixture::new();
    assert!(f.build("good.cpio", "disk.img", &[]).status.success());
    let disk = f.path("disk.img");
    let d = p(&disk);
    let token = f.path("token.json");
    std::fs::write(&token, r#"{"type":"example","keyslots":[]}"#).unwrap();
    let t = p(&token);
    let (good, other) = (f.path("secret.json"), f.path("other.json"));
    let before = std::fs::read(&disk).unwrap();
    let unchanged = |what: &str| assert!(std::fs::read(&disk).unwrap() == before, "{what}: the disk changed");

    let no_secret = veil(&["luks", "token", "add", d, "--part", "veil-boot", "--file", t]);
    fails(&no_secret, 2, "is a veil-boot header; `veil luks token add` changes one only with --secret FILE");
    unchanged("token add without --secret");
    let wrong = veil(&["luks", "token", "add", d, "--part", "veil-boot", "--file", t, "--secret", p(&other)]);
    fails(&wrong, 1, "does not open");
    assert!(err(&wrong).contains("nothing was written"), "{}", err(&wrong));
    unchanged("token add with another secret");
    fails(&veil(&["luks", "token", "remove", d, "--part", "veil-boot", "--id", "0"]), 2, "only with --secret FILE");
    let wrong = veil(&["luks", "token", "remove", d, "--part", "veil-boot", "--id", "0", "--secret", p(&other)]);
    fails(&wrong, 1, "does not open");
    unchanged("token remove");

    // The veil-boot volume on its own (no --part): known by the boot bundle's token.
    let list = veil(&["luks", "dump", d, "--part", "veil-boot", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let gpt = veil_agent::gpt::Gpt::read(&mut std::fs::File::open(&disk).unwrap()).unwrap();
    let part = gpt.by_name("veil-boot").unwrap();
    let alone = f.path("veil-boot.luks");
    std::fs::write(&alone, &before[part.offset() as usize..(part.offset() + part.size()) as usize]).unwrap();
    let alone_before = std::fs::read(&alone).unwrap();
    fails(&veil(&["luks", "token", "add", p(&alone), "--file", t]), 2, "is a veil-boot header");
    assert!(std::fs::read(&alone).unwrap() == alone_before, "the volume changed");
    assert_eq!(doc["metadata"]["tokens"]["0"]["type"], "veil-bundle", "{doc}");
    // As the SNP test tampers a token: the volume copied out, a token removed and added back
    // with --secret, by id.
    let secret = p(&good);
    let bundle = doc["metadata"]["tokens"]["0"].clone();
    let bundle_file = f.path("bundle-token.json");
    let mut bare = bundle.clone();
    bare.as_object_mut().unwrap().remove("keyslots");
    std::fs::write(&bundle_file, serde_json::to_vec(&bare).unwrap()).unwrap();
    let removed = veil(&["luks", "token", "remove", "--id", "0", "--secret", secret, p(&alone)]);
    assert!(removed.status.success(), "{}", err(&removed));
    let add = ["luks", "token", "add", "--id", "0", "--secret", secret, "--file", p(&bundle_file), p(&alone)];
    let added = veil(&add);
    assert!(added.status.success(), "{}", err(&added));
    let listed = veil(&["luks", "token", "list", p(&alone), "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["tokens"]["0"], bundle, "the token came back as it was");

    // With the secret that opens it: added, then removed.
    let added = veil(&["luks", "token", "add", d, "--part", "veil-boot", "--file", t, "--secret", p(&good), "--json"]);
    assert!(added.status.success(), "{}", err(&added));
    let n: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    let id = n["token"].to_string();
    let removed = veil(&["luks", "token", "remove", d, "--part", "veil-boot", "--id", &id, "--secret", p(&good)]);
    assert!(removed.status.success(), "{}", err(&removed));
    // veil-root carries no bundle: no secret needed.
    let root = veil(&["luks", "token", "add", d, "--part", "veil-root", "--file", t]);
    assert!(root.status.success(), "{}", err(&root));
}

/// `veil recover --print-key --json` and `--out --json`: one object each, the key as
/// `veil derive disk-key --json` gives it.
#[test]
fn recover_prints_json() {
    let f = Fixture::new();
    assert!(f.build("good.cpio", "disk.img", &[]).status.success());
    let (disk, secret) = (f.path("disk.img"), f.path("secret.json"));
    let (d, s) = (p(&disk), p(&secret));
    let k = veil(&["recover", "--secret", s, "--disk", d, "--print-key", "--json"]);
    assert!(k.status.success(), "{}", err(&k));
    let doc: serde_json::Value = serde_json::from_slice(&k.stdout).unwrap();
    assert_eq!(doc["part"], "veil-root");
    let uuid = doc["uuid"].as_str().unwrap();
    let derived = veil(&["derive", "disk-key", "--secret", s, "--uuid", uuid]);
    assert_eq!(doc["disk_key"].as_str().unwrap(), out(&derived).trim());
    let plain = f.path("root.ext4");
    let r = veil(&["recover", "--secret", s, "--disk", d, "--out", p(&plain), "--json"]);
    assert!(r.status.success(), "{}", err(&r));
    let doc: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(doc["uuid"], uuid);
    assert_eq!(doc["bytes"], std::fs::metadata(&plain).unwrap().len());
    assert_eq!(doc["out"], p(&plain));
}

/// `luks dump disk.img` said "no LUKS2 magic"; `--part nope` listed no names; `recover --out`
/// wrote plaintext 0644 and overwrote nothing but gave no --force; `--print-key --out`
/// ignored --out; a wrong secret and a truncated disk gave no hint.
#[test]
fn partitions_recover_and_hints() {
    let f = Fixture::new();
    assert!(f.build("good.cpio", "disk.img", &[]).status.success());
    let disk = f.path("disk.img");
    let d = p(&disk);
    fails(&veil(&["luks", "dump", d]), 2, "is a GPT disk, not a LUKS2 volume: name a partition with --part");
    fails(
        &veil(&["luks", "dump", d, "--part", "nope"]),
        2,
        "no partition named \"nope\" (it has: veil-boot, veil-root)",
    );
    let dump = veil(&["luks", "dump", d, "--part", "veil-root"]);
    assert!(dump.status.success(), "{}", err(&dump));
    assert!(out(&dump).contains("partition veil-root") && out(&dump).contains("tokens:\n  (none)"), "{}", out(&dump));
    let secret = f.path("secret.json");
    let s = p(&secret);
    let opened = veil(&["luks", "open", d, "--part", "veil-boot", "--secret", s, "--json"]);
    assert!(opened.status.success(), "{}", err(&opened));
    let wrong = veil(&["luks", "open", d, "--part", "veil-boot", "--secret", p(&f.path("other.json"))]);
    fails(&wrong, 1, "no keyslot opens");
    assert!(err(&wrong).contains("hint: the key or master secret is not one this volume was made with"));

    // recover: plaintext 0600, never over a file without --force, --print-key alone.
    let plain = f.path("root.ext4");
    let r = veil(&["recover", "--secret", s, "--disk", d, "--out", p(&plain)]);
    assert!(r.status.success(), "{}", err(&r));
    assert_eq!(std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777, 0o600);
    let again = veil(&["recover", "--secret", s, "--disk", d, "--out", p(&plain)]);
    fails(&again, 1, "already exists; --force replaces it");
    assert!(veil(&["recover", "--secret", s, "--disk", d, "--out", p(&plain), "--force"]).status.success());
    fails(&veil(&["recover", "--secret", s, "--disk", d, "--print-key", "--out", p(&f.path("k"))]), 2, "--print-key");
    assert!(!f.path("k").exists());
    fails(
        &veil(&["recover", "--secret", s, "--disk", d, "--part", "veil-data", "--print-key"]),
        2,
        "it has: veil-boot",
    );
    // A secret others can read is used, with a warning.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = veil(&["recover", "--secret", s, "--disk", d, "--print-key"]);
    assert!(key.status.success() && err(&key).contains("readable by others (mode 0644); chmod 600"), "{}", err(&key));

    // A truncated copy of the disk: the hint says so.
    let bytes = std::fs::read(&disk).unwrap();
    let cut = f.path("cut.img");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let t = veil(&["recover", "--secret", s, "--disk", p(&cut), "--out", p(&f.path("cut.ext4"))]);
    assert_eq!(t.status.code(), Some(1), "{}", err(&t));
    assert!(err(&t).contains("hint: the file is shorter than its headers say"), "{}", err(&t));
    assert!(!f.path("cut.ext4").exists(), "no file left behind");
}

/// A LUKS2 volume given where a whole disk belongs (`--part`, `veil recover`, `veil image
/// inspect`) ended in "no valid GPT: primary: no \"EFI PART\" signature", exit 1; now it is an
/// argument error that says which commands take a volume and which a disk. Nothing is written.
#[test]
fn a_volume_where_a_disk_belongs_is_an_argument_error() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s.json");
    assert!(veil(&["secret", "new", "--out", p(&secret)]).status.success());
    let (s, vol) = (p(&secret), dir.path().join("v.luks"));
    assert!(veil(&["luks", "format", p(&vol), "--size", "20M", "--secret", s]).status.success());
    let v = p(&vol);
    let said = "v.luks is a LUKS2 volume, not a GPT disk: `veil luks` takes it without --part";
    fails(&veil(&["luks", "dump", v, "--part", "veil-root"]), 2, said);
    fails(&veil(&["image", "inspect", v]), 2, said);
    let plain = dir.path().join("plain.img");
    fails(&veil(&["recover", "--secret", s, "--disk", v, "--out", p(&plain)]), 2, said);
    assert!(!plain.exists(), "no file left behind");
    // Without --part the volume opens, as the message says.
    assert!(veil(&["luks", "open", v, "--secret", s]).status.success());
    // A file that is neither stays a plain failure, named.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5au8; 1 << 20]).unwrap();
    fails(&veil(&["luks", "dump", p(&junk), "--part", "veil-root"]), 1, "junk.img: not a GPT disk");
}

/// `image build` from a root tree that is not root's (unpacked by a user) made every file of the
/// root filesystem that user's without a word; now it warns, before mke2fs runs.
#[test]
fn image_build_warns_when_the_root_tree_is_not_roots() {
    let f = Fixture::new();
    let rootfs = f.path("rootfs");
    use std::os::unix::fs::MetadataExt;
    let as_root = std::fs::metadata(&rootfs).unwrap().uid() == 0;
    if as_root {
        std::os::unix::fs::chown(&rootfs, Some(65534), Some(65534)).unwrap();
    }
    let o = f.build("good.cpio", "disk.img", &[]);
    assert!(o.status.success(), "{}", err(&o));
    let e = err(&o);
    let warned = e.find("rootfs is owned by uid ").unwrap_or_else(|| panic!("no warning: {e}"));
    assert!(e.contains("not root: the root filesystem keeps its files' owners"), "{e}");
    assert!(warned < e.find("(mke2fs)").unwrap(), "the warning came after mke2fs: {e}");
    if as_root {
        // A tree that is root's: no warning.
        std::os::unix::fs::chown(&rootfs, Some(0), Some(0)).unwrap();
        let o = f.build("good.cpio", "disk.img", &["--force"]);
        assert!(o.status.success() && !err(&o).contains("owned by uid"), "{}", err(&o));
    }
}

/// Blocker 4 (the warning) and the Polish items of `image build`: checks before writing, no
/// overwrite of the disk or its init-data without --force, the initrd's fitness.
#[test]
fn image_build_checks_before_writing_and_warns_about_the_initrd() {
    let f = Fixture::new();
    let bare = f.build("bare.cpio", "bare.img", &[]);
    assert!(bare.status.success(), "{}", err(&bare));
    let e = err(&bare);
    assert!(e.contains("warning: initrd") && e.contains("it has no cryptsetup"), "{e}");
    assert!(e.contains("nothing in it names /cryptroot/keyfiles/veil-root.key"), "{e}");
    assert!(e.contains("root filesystem of 33 MiB (its contents x1.5 + 32 MiB"), "{e}");
    let good = f.build("good.cpio", "disk.img", &[]);
    assert!(good.status.success(), "{}", err(&good));
    assert!(!err(&good).contains("warning: initrd"), "{}", err(&good));
    assert!(!err(&good).contains("mke2fs 1."), "mke2fs chatter: {}", err(&good));

    // An existing disk or init-data: refused before mke2fs runs, nothing touched.
    let disk = f.path("disk.img");
    let before = std::fs::metadata(&disk).unwrap().modified().unwrap();
    let again = f.build("good.cpio", "disk.img", &[]);
    fails(&again, 1, "disk.img already exists; --force replaces it");
    assert!(!err(&again).contains("mke2fs"), "{}", err(&again));
    assert_eq!(std::fs::metadata(&disk).unwrap().modified().unwrap(), before);
    std::fs::write(f.path("new.init-data.toml"), "mine").unwrap();
    fails(&f.build("good.cpio", "new.img", &[]), 1, "new.init-data.toml already exists");
    assert!(!f.path("new.img").exists());
    assert_eq!(std::fs::read_to_string(f.path("new.init-data.toml")).unwrap(), "mine");
    // Argument errors exit 2 and create nothing.
    fails(&f.build("good.cpio", "x.img", &["--measurement-salt", "zz"]), 2, "--measurement-salt is not hex");
    fails(&f.build("good.cpio", "x.img", &["--size", "1M"]), 2, "--size 1048576 leaves");
    assert!(!f.path("x.img").exists() && !f.path("x.init-data.toml").exists());
    // --force replaces both.
    let forced = f.build("good.cpio", "disk.img", &["--force"]);
    assert!(forced.status.success(), "{}", err(&forced));
    assert_ne!(std::fs::metadata(&disk).unwrap().modified().unwrap(), before);
    // No temporary file left beside them.
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".veil-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `luks format --size 1K` left a 1 KiB file; bad hex and a bad UUID exited 1; `token add`
/// took its file as `--json FILE`; `token list` printed nothing when empty; `--secret` took no
/// inline kms:// URI.
#[test]
fn luks_and_derive_argument_errors_exit_2_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s.json");
    assert!(veil(&["secret", "new", "--out", p(&secret)]).status.success());
    let img = dir.path().join("v.img");
    fails(&veil(&["luks", "format", p(&img), "--size", "1K", "--secret", p(&secret)]), 2, "needs at least");
    assert!(!img.exists(), "no file left behind");
    fails(&veil(&["luks", "format", p(&img), "--size", "20M", "--uuid", "nope", "--secret", p(&secret)]), 2, "--uuid");
    fails(&veil(&["luks", "format", p(&img), "--size", "20M"]), 2, "--key-file FILE or derive it with --secret");
    fails(
        &veil(&["luks", "format", p(&img), "--size", "20M", "--secret", p(&dir.path().join("no"))]),
        1,
        "cannot read",
    );
    assert!(!img.exists(), "no file left behind");
    fails(&veil(&["derive", "disk-key", "--secret", p(&secret), "--uuid", "xyz"]), 2, "is not a volume UUID");
    fails(&veil(&["secret", "show", p(&secret), "--measurement-salt", "qq"]), 2, "--measurement-salt is not hex");

    let f = veil(&["luks", "format", p(&img), "--size", "20M", "--secret", p(&secret), "--json"]);
    let uuid = serde_json::from_slice::<serde_json::Value>(&f.stdout).unwrap()["uuid"].as_str().unwrap().to_string();
    let empty = veil(&["luks", "token", "list", p(&img)]);
    assert!(empty.status.success() && err(&empty).contains("no tokens"), "{}", err(&empty));
    let token = dir.path().join("t.json");
    std::fs::write(&token, r#"{"type":"example","keyslots":[]}"#).unwrap();
    let added = veil(&["luks", "token", "add", p(&img), "--file", p(&token), "--json"]);
    assert_eq!(out(&added).trim(), r#"{"token":0}"#, "{}", err(&added));
    assert_eq!(veil(&["luks", "token", "add", p(&img), "--json", p(&token)]).status.code(), Some(2));

    // The master secret inline as its URI: used, and never echoed.
    let text = std::fs::read(&secret).unwrap();
    let ms = veil_agent::keys::MasterSecret::parse(&text).unwrap();
    let uri = ms.to_uri();
    let key = veil(&["derive", "disk-key", "--secret", &uri, "--uuid", &uuid]);
    let from_file = veil(&["derive", "disk-key", "--secret", p(&secret), "--uuid", &uuid]);
    assert!(key.status.success() && out(&key) == out(&from_file), "{}", err(&key));
    // The broker takes it too (and then wants something to verify).
    let serve = veil(&["kbs", "serve", "--secret", &uri]);
    fails(&serve, 1, "nothing to verify");
    assert!(!err(&serve).contains(&uri[10..]), "{}", err(&serve));
    let shown = veil(&["secret", "show", &uri]);
    assert!(shown.status.success() && !out(&shown).contains(&uri[10..]), "{}", out(&shown));
    let json_text = String::from_utf8(text).unwrap();
    let leaked = veil(&["luks", "open", p(&img), "--secret", &json_text]);
    fails(&leaked, 2, "given as JSON text");
    assert!(!err(&leaked).contains(&json_text[5..30]), "{}", err(&leaked));
}

/// Shell completions and manual pages, generated from the parser's definitions.
#[test]
fn completions_and_man_pages() {
    let bash = veil(&["completions", "bash"]);
    assert!(bash.status.success() && out(&bash).contains("_veil()") && out(&bash).contains("inspect"));
    assert!(out(&veil(&["completions", "zsh"])).contains("#compdef veil"));
    fails(&veil(&["completions", "tcsh"]), 2, "invalid value");
    let man = veil(&["man"]);
    assert!(out(&man).contains(".TH veil 1"), "{}", out(&man));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(veil(&["man", "--dir", p(d)]).status.success());
    let page = std::fs::read_to_string(d.join("veil-luks-format.1")).unwrap();
    assert!(page.contains("veil\\-luks\\-format") && page.contains("\\-\\-sector\\-size"), "{page}");
    assert!(d.join("veil-image-inspect.1").exists());
    fails(&veil(&["man", "--dir", p(d)]), 1, "veil.1 already exists; --force replaces it");
    assert!(veil(&["man", "--dir", p(d), "--force"]).status.success());
}

/// `measure`: one `--json` shape per platform, `--out` never over a file without --force, an
/// ignored `--image` and a missing target are argument errors, a file that is no veilboot ROM
/// is refused and the development ROM is measured with a warning.
#[test]
fn measure_json_out_force_and_rom_checks() {
    let f = Fixture::new();
    assert!(f.build("good.cpio", "disk.img", &[]).status.success());
    let (rom, dev, junk) = (f.path("rom.fd"), f.path("dev.fd"), f.path("junk.fd"));
    std::fs::write(&rom, fake_rom(false)).unwrap();
    std::fs::write(&dev, fake_rom(true)).unwrap();
    std::fs::write(&junk, vec![0x5au8; 1 << 20]).unwrap();
    let mut release_like = fake_rom(false);
    release_like[0x2000..0x2000 + 26].copy_from_slice(b"opt/veil/dev-master-secret");
    let release = f.path("release.fd");
    std::fs::write(&release, release_like).unwrap();
    let disk = f.path("disk.img");
    let tpm = |rom: &Path, extra: &[&str]| {
        let mut a = vec!["measure", "--platform", "tpm", "--rom", p(rom), "--image", p(&disk)];
        a.extend(extra);
        veil(&a)
    };
    fails(&tpm(&junk, &[]), 1, "not a veilboot ROM");
    // A ROM file is its contents rounded up to 64 KiB, at most 2 MiB (issue 32 item 3).
    let sized = f.path("sized.fd");
    std::fs::write(&sized, fake_rom_of(false, 448 << 10)).unwrap();
    assert!(tpm(&sized, &[]).status.success(), "a 448 KiB ROM is measured");
    for size in [(448 << 10) + 4096, 4 << 20] {
        std::fs::write(&sized, fake_rom_of(false, size)).unwrap();
        fails(&tpm(&sized, &[]), 1, "a veilboot ROM is a multiple of 64 KiB up to 2 MiB");
    }
    let m = tpm(&release, &[]);
    assert!(m.status.success() && !err(&m).contains("development ROM"), "{}", err(&m));
    let m = tpm(&dev, &[]);
    assert!(m.status.success() && err(&m).contains("is the development ROM"), "{}", err(&m));
    let m = tpm(&rom, &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    assert_eq!(doc["4"]["warnOnly"], false, "{doc}");
    let out_file = f.path("m.json");
    assert!(tpm(&rom, &["--out", p(&out_file)]).status.success());
    std::fs::write(&out_file, "keep").unwrap();
    fails(&tpm(&rom, &["--out", p(&out_file)]), 1, "m.json already exists; --force replaces it");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "keep");
    assert!(tpm(&rom, &["--out", p(&out_file), "--force"]).status.success());
    assert_ne!(std::fs::read_to_string(&out_file).unwrap(), "keep");

    fails(&veil(&["measure", "--platform", "snp", "--rom", p(&rom), "--image", p(&disk)]), 2, "--image is not part");
    fails(&veil(&["measure", "--platform", "tdx", "--rom", p(&rom)]), 2, "--platform tdx needs --image");
    fails(&veil(&["measure", "--platform", "snp", "--rom", p(&rom), "--vcpu-sig", "0x1ffffffff"]), 2, "32-bit");
}

/// `boot-report --svg` and `tpm ak --out` overwrote silently; `kbs relay --broker HOST:PORT`
/// failed only once a VM connected; `verify` printed each refusal twice.
#[test]
fn outputs_need_force_and_the_relay_checks_its_url_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    std::fs::write(&log, "veil: t=100 stage=start\nveil: t=250 stage=end\n").unwrap();
    let svg = dir.path().join("boot.svg");
    std::fs::write(&svg, "mine").unwrap();
    fails(&veil(&["boot-report", p(&log), "--svg", p(&svg)]), 1, "boot.svg already exists; --force replaces it");
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), "mine");
    assert!(veil(&["boot-report", p(&log), "--svg", p(&svg), "--force"]).status.success());
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let ak = dir.path().join("ak.pem");
    std::fs::write(&ak, "mine").unwrap();
    // Refused before the TPM is even reached.
    fails(&veil(&["tpm", "ak", "--swtpm", "127.0.0.1:1", "--out", p(&ak)]), 1, "ak.pem already exists");
    // A --swtpm that is no HOST:PORT is an argument error, found before the TPM is reached.
    let ek = dir.path().join("ek.pem");
    fails(&veil(&["tpm", "ek", "--swtpm", "nohost", "--out", p(&ek)]), 2, "expected HOST:PORT");
    assert!(!ek.exists(), "no file left behind");

    let start = std::time::Instant::now();
    let sock = dir.path().join("none.sock");
    fails(&veil(&["kbs", "relay", "--socket", p(&sock), "--broker", "127.0.0.1:8080"]), 2, "only http:// URLs");
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "it waited for the VM first");

    let report = dir.path().join("report.bin");
    // A version-5 report (the layout the verifier knows) with no certificates beside it.
    let mut bytes = vec![0u8; 1184];
    bytes[0] = 5;
    std::fs::write(&report, bytes).unwrap();
    let refused = veil(&["verify", "--platform", "snp", "--report", p(&report)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(out(&refused).starts_with("REFUSED: no VCEK certificate"), "{}", out(&refused));
    assert!(out(&refused).contains("veil verify --certs DIR"), "{}", out(&refused));
    assert!(!err(&refused).contains("VCEK"), "the reason twice: {}", err(&refused));
    fails(&veil(&["verify", "--platform", "snp", "--report", p(&report), "--host-data", "xy"]), 2, "--host-data");
    fails(&veil(&["verify", "--platform", "snp", "--report", p(&report), "--snp-min-tcb", "x"]), 2, "--snp-min-tcb");
    let rom = dir.path().join("rom.fd");
    fails(&veil(&["measure", "--platform", "snp", "--rom", p(&rom), "--vcpus", "0"]), 2, "--vcpus");
    let secret = dir.path().join("secret.json");
    assert!(veil(&["secret", "new", "--out", p(&secret)]).status.success());
    let serve = veil(&["kbs", "serve", "--secret", p(&secret), "--listen", "nope", "--snp-reference", "none.json"]);
    fails(&serve, 2, "--listen \"nope\": expected HOST:PORT");
}

/// qemu/snp.sh and qemu/tdx.sh name what the host lacks (QEMU's version, KVM with SEV-SNP or
/// TDX) instead of ending in QEMU's own error.
#[test]
fn qemu_scripts_check_the_host_first() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (script, name) in [("qemu/snp.sh", "SEV-SNP"), ("qemu/tdx.sh", "TDX")] {
        let o = Command::new("sh").arg(root.join(script)).args(["rom", "k", "i", "c"]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{script}: {}", err(&o));
        let e = err(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(name) || e.contains("veil not found"), "{script}: {e}");
        // An old QEMU is named with the version needed.
        let fake = tempfile::tempdir().unwrap();
        let qemu = fake.path().join("qemu");
        std::fs::write(&qemu, "#!/bin/sh\necho 'QEMU emulator version 7.2.22 (Debian)'\n").unwrap();
        std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
        let o =
            Command::new("sh").arg(root.join(script)).args(["rom", "k", "i", "c"]).env("QEMU", &qemu).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        let want = if name == "TDX" { "needs QEMU 10.1 or later" } else { "needs QEMU 9.1 or later" };
        assert!(err(&o).contains("is version 7.2") && err(&o).contains(want), "{}", err(&o));
    }
}

/// `veil verify --platform snp --json`: a refusal keeps the checks that passed before it.
#[test]
fn verify_json_refusal_keeps_the_checks_that_passed() {
    let Some(data) = veil_testkit::require::testdata("snp") else { return };
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(data.join("reports/oak-genoa-v5/vcek.der"), certs.join("vcek.der")).unwrap();
    std::fs::copy(data.join("certs/amd-ark-ask/genoa-ask.pem"), certs.join("ask.pem")).unwrap();
    std::fs::copy(data.join("certs/amd-ark-ask/genoa-ark.pem"), certs.join("ark.pem")).unwrap();
    let report = data.join("reports/oak-genoa-v5/report.bin");
    // The test data has no AMD CRL: the CRL check is waived so the report's own checks run.
    let args = ["verify", "--platform", "snp", "--report", p(&report), "--certs", p(&certs), "--allow-missing-crl"];
    let mut refused = args.to_vec();
    let host_data = "11".repeat(32);
    refused.extend(["--host-data", &host_data, "--json"]);
    let o = veil(&refused);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["verified"], false);
    assert!(doc["refusal"].as_str().unwrap().starts_with("HOST_DATA "), "{doc}");
    let checks = doc["checks"].as_array().unwrap();
    assert!(checks.len() >= 4 && checks[0].as_str().unwrap().starts_with("signature: "), "{doc}");
    // The text form: the passed checks, then the refusal, once.
    let mut text = args.to_vec();
    text.extend(["--host-data", &host_data]);
    let o = veil(&text);
    assert!(out(&o).starts_with("ok   signature: ") && out(&o).contains("\nREFUSED: HOST_DATA "), "{}", out(&o));
    assert!(!err(&o).contains("HOST_DATA"), "{}", err(&o));
}
