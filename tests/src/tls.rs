use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, module_path, workspace_root, TempDir};

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA.
pub struct Pki {
    dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = TempDir::new("pki");
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=tally test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                ],
            );
        }
        // `server`: for 127.0.0.1 and localhost; `elsewhere`: the same CA, another host name.
        for (name, san) in [
            ("server", "IP:127.0.0.1,DNS:localhost"),
            ("elsewhere", "DNS:elsewhere.example"),
        ] {
            std::fs::write(
                d.join(format!("{name}.ext")),
                format!(
                    "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                     keyUsage=digitalSignature,keyEncipherment\n\
                     extendedKeyUsage=serverAuth,clientAuth\n"
                ),
            )
            .expect("write the extensions");
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=tally test server",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &crt,
                ],
            );
        }
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that signed the server's certificate.
    pub fn ca(&self) -> String {
        self.file("ca.crt").to_string_lossy().into_owned()
    }

    /// A CA that signed nothing the servers use.
    pub fn other_ca(&self) -> String {
        self.file("other-ca.crt").to_string_lossy().into_owned()
    }
}

/// A TLS-only redis-server (plain port 0) with the module, SIGKILLed on drop.
pub struct TlsServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl TlsServer {
    /// A single node.
    pub fn start(pki: &Pki) -> TlsServer {
        TlsServer::start_with(pki, &[])
    }

    /// A node with `extra` arguments (e.g. cluster mode).
    pub fn start_with(pki: &Pki, extra: &[&str]) -> TlsServer {
        TlsServer::start_as(pki, "server", extra)
    }

    /// A node whose certificate is `<cert>.crt` of `pki` (`"server"` or `"elsewhere"`).
    pub fn start_as(pki: &Pki, cert: &str, extra: &[&str]) -> TlsServer {
        let dir = TempDir::new("redis-tls");
        let mut server = TlsServer {
            port: 0,
            child: None,
            dir,
        };
        for attempt in 0..5 {
            server.port = free_port();
            if server.spawn(pki, cert, extra) {
                return server;
            }
            eprintln!("TLS server did not come up on attempt {attempt}; retrying");
        }
        panic!("could not start a TLS redis-server:\n{}", server.log());
    }

    fn spawn(&mut self, pki: &Pki, cert: &str, extra: &[&str]) -> bool {
        let d = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
            .arg("--tls-port")
            .arg(self.port.to_string())
            .arg("--tls-cert-file")
            .arg(pki.file(&format!("{cert}.crt")))
            .arg("--tls-key-file")
            .arg(pki.file(&format!("{cert}.key")))
            .arg("--tls-ca-cert-file")
            .arg(pki.file("ca.crt"))
            .args(["--tls-auth-clients", "no"])
            // So that the ACL, not this option, is what refuses DEBUG to the API user.
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(d)
            .arg("--logfile")
            .arg(d.join("server.log"))
            .arg("--loadmodule")
            .arg(module_path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.cli(pki, &["PING"]).trim() == "PONG" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.kill();
        false
    }

    /// `redis-cli --tls` as the default user; its stdout (errors included, `redis-cli` prints
    /// them there).
    pub fn cli(&self, pki: &Pki, args: &[&str]) -> String {
        text(cli_as(self.port, pki, None, args))
    }

    /// `redis-cli --tls` as `user` with `password`.
    pub fn cli_as(&self, pki: &Pki, user: &str, password: &str, args: &[&str]) -> String {
        text(cli_as(self.port, pki, Some((user, password)), args))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of TLS redis on {} ---\n{}", self.port, self.log());
        }
        self.kill();
    }
}

fn text(out: Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// `redis-cli --tls --cacert <ca>` to 127.0.0.1:`port`.
pub fn cli_as(port: u16, pki: &Pki, auth: Option<(&str, &str)>, args: &[&str]) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["--tls", "--cacert"])
        .arg(pki.file("ca.crt"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, password)) = auth {
        cmd.args(["--user", user, "--pass", password, "--no-auth-warning"]);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli")
}

/// The README's `ACL SETUSER tally-api ...` line, split into words, `PASSWORD` replaced.
pub fn readme_acl_words(password: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let lines: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ACL SETUSER tally-api "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "README.md must hold one ACL SETUSER tally-api line"
    );
    let words: Vec<String> = lines[0]
        .split_whitespace()
        .map(|w| w.replace("PASSWORD", password))
        .collect();
    // Least privilege (SPEC section 7): no blanket grant of commands or keys, and none of the
    // dangerous commands by name.
    for word in &words {
        let lower = word.to_ascii_lowercase();
        assert!(
            ![
                "+@all",
                "allcommands",
                "~*",
                "allkeys",
                "%rw~*",
                "%r~*",
                "%w~*"
            ]
            .contains(&lower.as_str()),
            "README's ACL line grants everything: {word}"
        );
        for cmd in ["flushall", "flushdb", "config", "keys", "debug", "module"] {
            assert_ne!(lower, format!("+{cmd}"), "README's ACL line grants {cmd}");
            assert!(
                !lower.starts_with(&format!("+{cmd}|")),
                "README's ACL line grants {word}"
            );
        }
        assert!(
            !lower.starts_with("+@"),
            "README's ACL line grants a category: {word}"
        );
    }
    words
}

/// Three TLS primaries with every slot assigned (`redis-cli --cluster create --tls`).
pub struct TlsCluster {
    pub nodes: Vec<TlsServer>,
}

impl TlsCluster {
    pub fn start(pki: &Pki) -> TlsCluster {
        let args = [
            "--cluster-enabled",
            "yes",
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
            "--cluster-node-timeout",
            "5000",
        ];
        let nodes: Vec<TlsServer> = (0..3).map(|_| TlsServer::start_with(pki, &args)).collect();
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.push("--cluster-yes".into());
        let words: Vec<&str> = create.iter().map(String::as_str).collect();
        let out = cli_as(nodes[0].port, pki, None, &words);
        assert!(out.status.success(), "cluster create: {}", text(out));
        let cluster = TlsCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = cluster.nodes.iter().all(|n| {
                n.cli(pki, &["CLUSTER", "INFO"])
                    .lines()
                    .any(|l| l.trim() == "cluster_state:ok")
            });
            if ok {
                return cluster;
            }
            assert!(Instant::now() < deadline, "the TLS cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
