//! A simulated OPC UA server (async-opcua's server) for the demo and the tests: one folder
//! of variables in namespace `urn:pdtf:sim`, values set from outside with any status code.
//!
//! It listens on loopback, on the given port or (0) a free one. Endpoints: None, and with
//! `secure` every policy the agent supports in Sign and SignAndEncrypt. Users: anonymous and
//! `operator` / the password given. It trusts every client certificate (it is a simulator; the
//! agent's side of trust is what the tests check).

use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::Variable;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{
    ServerBuilder, ServerEndpoint, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID,
};
use opcua::types::{
    DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, StatusCode, Variant,
};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const NAMESPACE: &str = "urn:pdtf:sim";
pub const USER: &str = "operator";

#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// 0: any free port.
    pub port: u16,
    pub pki_dir: PathBuf,
    /// Folder under Objects holding the variables.
    pub folder: String,
    pub variables: Vec<(String, Variant)>,
    pub secure: bool,
    pub password: Option<String>,
    /// Namespaces registered before `urn:pdtf:sim`, which moves its index (a server that
    /// comes back with a reordered namespace table).
    pub namespaces_before: Vec<String>,
}

pub struct SimServer {
    pub port: u16,
    pub endpoint: String,
    handle: ServerHandle,
    nodes: Arc<SimpleNodeManager>,
    ns: u16,
    folder: String,
    task: JoinHandle<()>,
}

impl SimServer {
    pub async fn start(o: SimOptions) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", o.port)).await?;
        let port = listener.local_addr()?.port();
        let mut users = vec![ANONYMOUS_USER_TOKEN_ID.to_string()];
        let mut b = ServerBuilder::new()
            .application_name("PDTF simulated line")
            .application_uri("urn:pdtf:sim-server")
            .product_uri("urn:pdtf:sim-server")
            .host("127.0.0.1")
            .port(port)
            .pki_dir(&o.pki_dir)
            .create_sample_keypair(true)
            .trust_client_certs(true)
            .discovery_urls(vec!["/".to_owned()]);
        let namespace = |uri: &str| NamespaceMetadata {
            namespace_uri: uri.to_owned(),
            ..Default::default()
        };
        for (i, uri) in o.namespaces_before.iter().enumerate() {
            b = b.with_node_manager(simple_node_manager(namespace(uri), &format!("other{i}")));
        }
        b = b.with_node_manager(simple_node_manager(namespace(NAMESPACE), "sim"));
        // A big PLC: any number of items per subscription, room to queue ten publishing
        // intervals' worth of responses for 10,000 changing items, sampling down to 10 ms.
        let limits = &mut b.limits_mut().subscriptions;
        limits.max_monitored_items_per_sub = 0;
        limits.max_queued_notifications = 200;
        limits.min_sampling_interval_ms = 10.0;
        if let Some(p) = &o.password {
            b = b.add_user_token(
                USER,
                ServerUserToken {
                    user: USER.to_owned(),
                    pass: Some(p.clone()),
                    ..Default::default()
                },
            );
            users.push(USER.to_owned());
        }
        let ids: Vec<&str> = users.iter().map(String::as_str).collect();
        b = b.add_endpoint("none", ServerEndpoint::new_none("/", &users));
        if o.secure {
            for (name, policy) in [
                ("b256", SecurityPolicy::Basic256Sha256),
                ("aes128", SecurityPolicy::Aes128Sha256RsaOaep),
                ("aes256", SecurityPolicy::Aes256Sha256RsaPss),
            ] {
                for (m, mode) in [
                    ("sign", MessageSecurityMode::Sign),
                    ("enc", MessageSecurityMode::SignAndEncrypt),
                ] {
                    b = b.add_endpoint(format!("{name}_{m}"), ("/", policy, mode, ids.as_slice()));
                }
            }
        }
        let (server, handle) = b
            .build()
            .map_err(|e| anyhow::anyhow!("OPC UA server: {e}"))?;
        let nodes = handle
            .node_managers()
            .get_by_name::<SimpleNodeManager>("sim")
            .expect("the simulator's node manager was added");
        let ns = handle
            .get_namespace_index(NAMESPACE)
            .expect("the namespace was registered");
        {
            let mut space = nodes.address_space().write();
            let folder = NodeId::new(ns, o.folder.clone());
            space.add_folder(
                &folder,
                o.folder.as_str(),
                o.folder.as_str(),
                &ObjectId::ObjectsFolder.into(),
            );
            let vars = o
                .variables
                .iter()
                .map(|(name, v)| {
                    let id = NodeId::new(ns, format!("{}.{name}", o.folder));
                    Variable::new(&id, name.as_str(), name.as_str(), v.clone())
                })
                .collect();
            space.add_variables(vars, &folder);
        }
        let task = tokio::spawn(async move {
            if let Err(e) = server.run_with(listener).await {
                tracing::error!(error = %e, "simulated OPC UA server stopped");
            }
        });
        Ok(Self {
            port,
            endpoint: format!("opc.tcp://127.0.0.1:{port}/"),
            handle,
            nodes,
            ns,
            folder: o.folder,
            task,
        })
    }

    /// The node id string (`ns=N;s=Folder.Name`) of a variable.
    pub fn node(&self, name: &str) -> String {
        format!("ns={};s={}.{name}", self.ns, self.folder)
    }

    /// Sets a variable's value and status; subscribers are notified.
    pub fn set(&self, name: &str, value: Variant, status: StatusCode) {
        self.set_many([(name, value, status)]);
    }

    /// Sets many variables under one lock of the address space (as a PLC's scan would).
    pub fn set_many<'a>(&self, values: impl IntoIterator<Item = (&'a str, Variant, StatusCode)>) {
        let now = DateTime::now();
        let updates: Vec<(NodeId, DataValue)> = values
            .into_iter()
            .map(|(name, value, status)| {
                let id = NodeId::new(self.ns, format!("{}.{name}", self.folder));
                let dv = DataValue {
                    value: Some(value),
                    status: Some(status),
                    source_timestamp: Some(now),
                    server_timestamp: Some(now),
                    ..Default::default()
                };
                (id, dv)
            })
            .collect();
        let subs = self.handle.subscriptions();
        let iter = updates.iter().map(|(id, dv)| (id, None, dv.clone()));
        if let Err(e) = self.nodes.set_values(subs, iter) {
            tracing::warn!(error = %e, "simulated OPC UA server: set failed");
        }
    }

    /// Stops listening and drops every session (as a server restart or crash does).
    pub async fn stop(self) {
        self.handle.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}
