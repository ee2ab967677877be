//! The schemas' `x-category` annotations, compiled once per schema (the common one, or the
//! common one with a service type's overlay) into a tree of the declared properties, so
//! that minimising a referral walks the document against that tree: no `$ref` is followed
//! and no pointer built per request, except for the fields actually withheld.
//!
//! The rules (docs/sharing.md):
//! - a property's category is its own `x-category` (written beside its `$ref` or on the
//!   schema the `$ref` names), else its enclosing property's; properties without either
//!   are kept;
//! - an array whose schema has `x-item-category` (`{"property": p, "categories": {value:
//!   category}}`) is minimised item by item, each item's category looked up by its `p`
//!   member (the array's own category otherwise), and goes as a whole only if every item
//!   was withheld;
//! - an object left empty by withholding goes too.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::intake::json::escape_pointer_token;

/// The compiled annotations of one schema (or schema pair).
#[derive(Debug, Default)]
pub(crate) struct Categories {
    /// `nodes[0]` is the document's top level; a property's `child` indexes its object's
    /// node. Recursive schemas share nodes, so this is a graph, built without loops.
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    properties: HashMap<String, Property>,
}

#[derive(Debug)]
struct Property {
    /// Its own `x-category`, if any (else its parent's applies).
    category: Option<String>,
    items: Option<ItemRule>,
    /// The node for the members of an object held here, if its schemas declare any.
    child: Option<usize>,
}

#[derive(Debug)]
struct ItemRule {
    /// The member of each item whose value names the item's category.
    property: String,
    /// That member's value → the item's category.
    categories: HashMap<String, String>,
}

/// The schemas describing one place in a document: `(schema node, its root document)`.
type Place<'a> = Vec<(&'a Value, &'a Value)>;

impl Categories {
    /// The tree for documents described by all of `roots` (whole schema documents, in
    /// order: the first one's annotation wins where two annotate the same property).
    pub(crate) fn compile(roots: &[&Value]) -> Self {
        let mut builder = Builder::default();
        let top: Place<'_> = roots.iter().map(|r| (*r, *r)).collect();
        builder.node(&top);
        Self {
            nodes: builder.nodes,
        }
    }

    /// Removes every property whose category `allowed` refuses, and returns their JSON
    /// Pointers in document order.
    pub(crate) fn withhold(
        &self,
        document: &mut Value,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut withheld = Vec::new();
        if let (Value::Object(map), false) = (document, self.nodes.is_empty()) {
            let mut path = String::new();
            self.walk(0, map, None, &mut path, allowed, &mut withheld);
        }
        withheld
    }

    fn walk(
        &self,
        node: usize,
        map: &mut Map<String, Value>,
        inherited: Option<&str>,
        path: &mut String,
        allowed: &dyn Fn(&str) -> bool,
        withheld: &mut Vec<String>,
    ) {
        let Some(node) = self.nodes.get(node) else {
            return;
        };
        map.retain(|key, value| {
            // Undeclared members carry no category of their own, and nothing under them
            // is declared: kept (the schemas refuse them anyway).
            let Some(property) = node.properties.get(key) else {
                return true;
            };
            let category = property.category.as_deref().or(inherited);
            let len = path.len();
            // Only declared members get here: the path grows by their (schema-declared)
            // name, escaped only when it needs to be.
            if key.contains(['~', '/']) {
                path.push('/');
                path.push_str(&escape_pointer_token(key));
            } else {
                path.push('/');
                path.push_str(key);
            }
            let keep = match (&property.items, &mut *value) {
                (Some(rule), Value::Array(items)) => {
                    let before = withheld.len();
                    let total = items.len();
                    let mut index = 0;
                    items.retain(|item| {
                        let item_category = item
                            .get(&rule.property)
                            .and_then(Value::as_str)
                            .and_then(|v| rule.categories.get(v))
                            .map(String::as_str)
                            .or(category);
                        let keep = item_category.is_none_or(allowed);
                        if !keep {
                            withheld.push(format!("{path}/{index}"));
                        }
                        index += 1;
                        keep
                    });
                    if items.is_empty() && total > 0 && withheld.len() > before {
                        // Every item withheld: the array itself is reported, as a whole
                        // property would be.
                        withheld.truncate(before);
                        withheld.push(path.clone());
                        false
                    } else {
                        true
                    }
                }
                _ => match category {
                    Some(c) if !allowed(c) => {
                        withheld.push(path.clone());
                        false
                    }
                    _ => match (property.child, value) {
                        (Some(child), Value::Object(members)) => {
                            let before = withheld.len();
                            self.walk(child, members, category, path, allowed, withheld);
                            // An object left empty by withholding goes too.
                            !(members.is_empty() && withheld.len() > before)
                        }
                        _ => true,
                    },
                },
            };
            path.truncate(len);
            keep
        });
    }
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    /// Node index by the identity of the schemas describing it.
    seen: HashMap<Vec<(usize, usize)>, usize>,
}

impl Builder {
    fn node<'a>(&mut self, place: &Place<'a>) -> usize {
        let identity: Vec<(usize, usize)> = place
            .iter()
            .map(|(node, root)| {
                (
                    std::ptr::from_ref(*node) as usize,
                    std::ptr::from_ref(*root) as usize,
                )
            })
            .collect();
        if let Some(index) = self.seen.get(&identity) {
            return *index;
        }
        let index = self.nodes.len();
        self.nodes.push(Node::default());
        self.seen.insert(identity, index);

        // Every property any of the schemas declares, in their order.
        let mut names: Vec<&'a str> = Vec::new();
        for (node, root) in place {
            if let Some(Value::Object(properties)) = resolve(node, root).get("properties") {
                for name in properties.keys() {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
            }
        }
        let mut properties = HashMap::with_capacity(names.len());
        for name in names {
            // The property's schema as written (its `x-category` may sit beside a `$ref`).
            let declared: Place<'a> = place
                .iter()
                .filter_map(|(node, root)| {
                    resolve(node, root)
                        .get("properties")
                        .and_then(|p| p.get(name))
                        .map(|sub| (sub, *root))
                })
                .collect();
            let category = declared.iter().find_map(|(sub, root)| {
                sub.get("x-category")
                    .or_else(|| resolve(sub, root).get("x-category"))
                    .and_then(Value::as_str)
            });
            let items = declared.iter().find_map(|(sub, root)| {
                resolve(sub, root)
                    .get("x-item-category")
                    .or_else(|| sub.get("x-item-category"))
                    .map(item_rule)
            });
            let subs: Place<'a> = declared
                .iter()
                .map(|(sub, root)| (resolve(sub, root), *root))
                .collect();
            let child = subs
                .iter()
                .any(|(node, root)| resolve(node, root).get("properties").is_some())
                .then(|| self.node(&subs));
            properties.insert(
                name.to_owned(),
                Property {
                    category: category.map(str::to_owned),
                    items,
                    child,
                },
            );
        }
        self.nodes[index].properties = properties;
        index
    }
}

fn item_rule(rule: &Value) -> ItemRule {
    ItemRule {
        property: rule
            .get("property")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        categories: rule
            .get("categories")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .filter_map(|(value, category)| {
                        category.as_str().map(|c| (value.clone(), c.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Follows a local `$ref` (`#/...`) within its root document.
pub(crate) fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with('#') => root.pointer(&r[1..]).unwrap_or(node),
        _ => node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recursive_schemas_compile_to_a_finite_tree_and_still_minimise() {
        let schema = json!({
            "$defs": {"node": {"type": "object", "properties": {
                "secret": {"x-category": "health"},
                "next": {"$ref": "#/$defs/node"}
            }}},
            "properties": {"root": {"$ref": "#/$defs/node", "x-category": "referral"}}
        });
        let categories = Categories::compile(&[&schema]);
        assert!(categories.nodes.len() <= 3, "{:?}", categories.nodes);
        let mut doc = json!({"root": {"secret": 1, "next": {"next": {"secret": 2, "x": 3}}}});
        let withheld = categories.withhold(&mut doc, &|c| c != "health");
        assert_eq!(withheld, ["/root/next/next/secret", "/root/secret"]);
        assert_eq!(doc, json!({"root": {"next": {"next": {"x": 3}}}}));
    }

    #[test]
    fn names_needing_escapes_are_escaped_in_pointers() {
        let schema =
            json!({"properties": {"a/b": {"properties": {"m~n": {"x-category": "risk"}}}}});
        let categories = Categories::compile(&[&schema]);
        let mut doc = json!({"a/b": {"m~n": 1, "keep": 2}});
        assert_eq!(
            categories.withhold(&mut doc, &|c| c != "risk"),
            ["/a~1b/m~0n"]
        );
        assert_eq!(doc, json!({"a/b": {"keep": 2}}));
    }
}
