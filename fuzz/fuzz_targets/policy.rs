//! The policy parser: any text gives a policy or a list of errors, never a panic; a policy that
//! parses answers a decision.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purser_authz::Policy;
use purser_core::{Identity, RequestContext, ResourceScope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, "fuzz.yaml") {
        Ok(policy) => {
            let who = Identity::new("alice", vec!["dev".to_owned()]);
            let ctx = RequestContext {
                service: "registry".to_owned(),
                client_ip: Some([10, 0, 0, 1].into()),
            };
            let scope: ResourceScope = "repository:alice/app:pull,push".parse().unwrap();
            let grant = policy.authorize(&who, &ctx, &scope);
            let linear = policy.authorize_linear(&who, &ctx, &scope);
            assert_eq!(grant, linear);
        }
        Err(errors) => assert!(!errors.to_string().is_empty()),
    }
});
