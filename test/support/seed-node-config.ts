// The node config of the seed deployment (cluster-a's values), as the user's specification.
export const SEED = `tracing:
  log_level: debug
  display_thread_names: true
  display_thread_ids: true
runtime:
  n_cores: 0
  thread_name: "slim-data-plane"
  drain_timeout: 10s
services:
  slim/0:
    node_id: \${env:SLIM_SVC_ID}
    group_name: "cluster-a.example"
    dataplane:
      servers:
        - endpoint: "0.0.0.0:46357"
          metadata:
            local_endpoint: \${env:MY_POD_IP}
            external_endpoint: "slim.cluster-a.example:46357"
            client_config:
              tls:
                insecure_skip_verify: true
                source:
                  type: spire
                  socket_path: unix:/tmp/spire-agent/public/api.sock
          tls:
            insecure_skip_verify: false
            source:
              type: spire
              socket_path: unix:/tmp/spire-agent/public/api.sock
            ca_source:
              type: spire
              socket_path: unix:/tmp/spire-agent/public/api.sock
              trust_domains:
                - cluster-b.example
    controller:
      clients:
        - endpoint: "https://slim-control.admin.example:50052"
          tls:
            source:
              type: spire
              socket_path: unix:/tmp/spire-agent/public/api.sock
            ca_source:
              type: spire
              socket_path: unix:/tmp/spire-agent/public/api.sock
              trust_domains:
                - admin.example
`;
