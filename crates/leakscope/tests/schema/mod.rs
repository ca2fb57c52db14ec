//! `leakscope check --json`'s documented schema (docs/check-json.schema.json),
//! held to real output by the tests that produce it.

use std::path::Path;

/// `check --json`'s schema, as documented.
pub fn check_schema() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/check-json.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Where `v` breaks the documented schema of `check --json`.
pub fn schema_errors(schema: &serde_json::Value, v: &serde_json::Value) -> Vec<String> {
    let validator = jsonschema::draft202012::new(schema).expect("a valid draft 2020-12 schema");
    validator
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

/// Holds real `check --json` output to docs/check-json.schema.json, and
/// the schema to the output: the version is the schema's, and taking away
/// any field the output has at the top, in a metric or in the attribution
/// breaks it (every field is required, so a reader can rely on it).
pub fn assert_follows_schema(v: &serde_json::Value) {
    let schema = check_schema();
    assert!(jsonschema::meta::is_valid(&schema), "not a JSON Schema");
    let errors = schema_errors(&schema, v);
    assert!(errors.is_empty(), "{errors:#?}\n{v:#}");
    let version = v["schema_version"].as_u64().expect("schema_version");
    assert_eq!(
        schema["$id"].as_str().unwrap(),
        format!("urn:leakscope:check-json:{version}")
    );
    assert_eq!(schema["properties"]["schema_version"]["const"], version);
    let objects: [&[&str]; 3] = [&[], &["metrics", "0"], &["attribution"]];
    for at in objects {
        let pointer: String = at.iter().map(|k| format!("/{k}")).collect();
        let keys: Vec<String> = v
            .pointer(&pointer)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert!(!keys.is_empty(), "{pointer}");
        for key in keys {
            let mut broken = v.clone();
            broken
                .pointer_mut(&pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(&key);
            assert!(
                !schema_errors(&schema, &broken).is_empty(),
                "the schema lets {pointer}/{key} go missing"
            );
        }
    }
}
