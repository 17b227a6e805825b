//! The configuration loader: a `config.yaml` text and environment
//! variables, both untrusted as far as the loader knows. Any input is a
//! configuration or a list of problems, never a panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<(String, String)>)| {
    let (yaml, env) = input;
    let env: HashMap<String, String> = env.into_iter().collect();
    let _ = im_config::Config::from_yaml_str(yaml, &env);
    let _ = im_config::Config::from_env(&env);
});
