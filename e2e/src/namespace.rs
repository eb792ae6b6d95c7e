//! A namespace per test, with the chart installed into it and a kubeconfig
//! that acts as the chart's ServiceAccount; deleted when the test ends.

use super::*;

/// A namespace of one test, with the chart installed into it.
pub struct TestNamespace {
    /// The namespace.
    pub name: String,
    /// The Helm release (and ServiceAccount) name.
    pub release: String,
    /// Port of the batch coordinator of every operator run for this
    /// namespace: workers are given `http://127.0.0.1:<port>`, which must not
    /// change when an operator is restarted (it is part of the worker
    /// Deployment).
    pub coordinator_port: u16,
    deleted: bool,
}

impl Drop for TestNamespace {
    /// A test that panicked did not call `delete`: clear its finalizers and
    /// remove what it made, so that the next tests start clean.
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let _ = Command::new("kubectl")
            .args([
                "-n",
                &self.name,
                "patch",
                "migrationjobs",
                "--all",
                "--type=merge",
            ])
            .args(["-p", r#"{"metadata":{"finalizers":null}}"#])
            .output();
        let _ = Command::new("helm")
            .args(["uninstall", &self.release, "--namespace", &self.name])
            .output();
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>` and installs the chart into it,
    /// watching only this namespace (namespaced RBAC), with no in-cluster
    /// operator pod: tests run the operator as a local process instead.
    pub fn create(prefix: &str) -> Self {
        Self::create_with(prefix, &[&format!("watchNamespace={}", "{ns}")])
    }

    /// Like [`create`](Self::create) with extra `--set` values; `{ns}` in a
    /// value is replaced by the namespace name.
    pub fn create_with(prefix: &str, sets: &[&str]) -> Self {
        let id = suffix();
        let name = format!("e2e-{prefix}-{id}");
        // Unique release names: cluster-scoped RBAC objects are named after the release.
        let release = format!("freight-{id}");
        kubectl_ok(&["create", "namespace", &name]);
        let mut args = vec![
            "install".to_owned(),
            release.clone(),
            repo_root().join("charts/freight").display().to_string(),
            "--namespace".into(),
            name.clone(),
            "--skip-crds".into(),
            "--set".into(),
            "replicaCount=0".into(),
        ];
        for s in sets {
            args.push("--set".into());
            args.push(s.replace("{ns}", &name));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm_ok(&args);
        Self {
            name,
            release,
            coordinator_port: free_port(),
            deleted: false,
        }
    }

    /// The user name the chart's ServiceAccount authenticates as.
    pub fn service_account_user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.name, self.release)
    }

    /// A kubeconfig that impersonates the chart's ServiceAccount.
    pub fn operator_kubeconfig(&self) -> PathBuf {
        let mut kubeconfig = Kubeconfig::read().expect("read KUBECONFIG");
        for auth in &mut kubeconfig.auth_infos {
            if let Some(info) = auth.auth_info.as_mut() {
                info.impersonate = Some(self.service_account_user());
            }
        }
        let path = state_dir().join(format!("kubeconfig-{}", self.name));
        std::fs::write(
            &path,
            serde_yaml::to_string(&kubeconfig).expect("kubeconfig serializes"),
        )
        .expect("write kubeconfig");
        path
    }

    /// Deletes the jobs (while the operator and its RBAC are still there to
    /// process their finalizers), uninstalls the chart, deletes the namespace
    /// and waits until it is gone.
    pub async fn delete(mut self) {
        self.deleted = true;
        kubectl_ok(&[
            "-n",
            &self.name,
            "delete",
            "migrationjobs",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ]);
        helm_ok(&[
            "uninstall",
            &self.release,
            "--namespace",
            &self.name,
            "--wait",
        ]);
        kubectl_ok(&["delete", "namespace", &self.name, "--wait=false"]);
        let name = self.name.clone();
        eventually("namespace deletion", Duration::from_secs(90), || {
            let name = name.clone();
            async move {
                let out = kubectl(&["get", "namespace", &name]);
                (!out.status.success()).then_some(())
            }
        })
        .await;
    }
}
