import Foundation
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization

/// Reads, validates, versions and evaluates workspace policies. Compiled documents are cached per
/// workspace; a new version replaces the cached one when it is stored.
public final class PolicyService: PolicyEngine, Sendable {
    let store: PolicyStore
    let clock: any Clock
    let hooks: Hooks
    let cache = Mutex<[String: CompiledPolicy]>([:])

    init(services: Services) {
        store = PolicyStore(db: services.db)
        clock = services.clock
        hooks = services.hooks
    }

    /// The document in force: `{ws_id, version, rules, defaults, updated_at, updated_by}`.
    func document(wsID: String) async throws -> JSONValue {
        guard let row = try await store.latest(wsID) else {
            return .object([
                "ws_id": .string(wsID), "version": 0, "rules": .array([]), "defaults": .object([:]),
                "updated_at": .null, "updated_by": .null,
            ])
        }
        var doc =
            (try? JSONDecoder().decode(JSONValue.self, from: Data((row.string("document") ?? "{}").utf8)))?.objectValue
            ?? [:]
        doc["ws_id"] = .string(wsID)
        doc["version"] = .int(row.int("version") ?? 0)
        doc["updated_at"] = row.date("created_at").map { .string(HTTPDate.iso8601($0)) } ?? .null
        doc["updated_by"] = row.string("created_by").map { .string($0) } ?? .null
        return .object(doc)
    }

    /// Stores a new version after validating it; `ifMatch` (the version the editor saw) must be current.
    func put(wsID: String, body: JSONValue, ifMatch: Int?, userID: String, ip: String) async throws -> Int {
        let (compiled, canonical) = try Self.compile(body)
        let now = clock.now()
        let version = try await store.db.write { [store] tx -> Int in
            let current = try store.latest(tx, wsID)?.int("version") ?? 0
            if let ifMatch, ifMatch != current {
                throw HTTPError(
                    .preconditionFailed,
                    message:
                        "The policy changed since you read it (now version \(current)); "
                        + "reload and apply your change again",
                    details: ["version": .int(current)])
            }
            try store.insert(tx, wsID: wsID, version: current + 1, document: canonical, userID: userID, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "policy.updated", actorUserID: userID, wsID: wsID, resourceType: "policy",
                    resourceID: wsID, ip: ip,
                    details: ["version": .int(current + 1), "rules": .int(compiled.rules.count)]), at: now)
            return current + 1
        }
        cache.withLock { $0[wsID] = compiled }
        return version
    }

    func history(wsID: String, page: PageRequest) async throws -> Page<PolicyVersion> {
        let before = page.cursor.flatMap { Int($0) }
        let rows = try await store.history(wsID, before: before, limit: page.limit + 1)
        let items = rows.map {
            PolicyVersion(
                version: $0.int("version") ?? 0, createdAt: $0.date("created_at") ?? Date(),
                createdBy: $0.string("created_by"))
        }
        return Page(fetched: items, limit: page.limit, cursorOf: { String($0.version) })
    }

    // MARK: PolicyEngine

    public func decide(
        wsID: String, userID: String?, action: String, context: PolicyContext
    ) async throws -> PolicyDecision {
        var c = context
        if c.actorRole == nil, let userID, let roles = hooks.roles {
            c.actorRole = try await roles.role(userID: userID, wsID: wsID)?.rawValue
        }
        return try await compiled(wsID).decide(action, c)
    }

    func compiled(_ wsID: String) async throws -> CompiledPolicy {
        if let c = cache.withLock({ $0[wsID] }) { return c }
        guard let row = try await store.latest(wsID), let text = row.string("document") else {
            let empty = CompiledPolicy(rules: [], defaults: [:])
            cache.withLock { $0[wsID] = empty }
            return empty
        }
        let doc = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        let (c, _) = try Self.compile(doc)
        cache.withLock { $0[wsID] = c }
        return c
    }

    // MARK: Validation

    /// Validates a document and compiles it; every unknown field, action, effect or condition is a
    /// 400 that names it. Returns the compiled form and the document as stored.
    static func compile(_ body: JSONValue) throws -> (CompiledPolicy, String) {
        guard case .object(let top) = body else {
            throw APIError.validation("The policy must be a JSON object", field: "rules")
        }
        for key in top.keys where !["ws_id", "rules", "defaults"].contains(key) {
            throw APIError.validation("Unknown field '\(key)' (a policy has rules and defaults)", field: key)
        }
        var rules: [CompiledPolicy.Rule] = []
        var ids = Set<String>()
        let rawRules: [JSONValue]
        switch top["rules"] {
        case nil, .null: rawRules = []
        case .array(let a): rawRules = a
        default: throw APIError.validation("rules must be an array", field: "rules")
        }
        guard rawRules.count <= PolicyLimits.maxRules else {
            throw APIError.validation("At most \(PolicyLimits.maxRules) rules", field: "rules")
        }
        for (i, raw) in rawRules.enumerated() {
            let rule = try compileRule(raw, index: i)
            guard ids.insert(rule.id).inserted else {
                throw APIError.validation("Rule id '\(rule.id)' is used twice", field: "rules[\(i)].id")
            }
            rules.append(rule)
        }
        var defaults: [String: PolicyEffect] = [:]
        switch top["defaults"] {
        case nil, .null: break
        case .object(let d):
            for (family, v) in d {
                guard PolicyActions.families.contains(family) else {
                    throw APIError.validation(
                        "Unknown action family '\(family)' in defaults (one of "
                            + PolicyActions.families.joined(separator: ", ") + ")",
                        field: "defaults.\(family)")
                }
                guard case .string(let s) = v, let e = PolicyEffect(rawValue: s) else {
                    throw APIError.validation(
                        "defaults.\(family) must be allow, deny or require_approval", field: "defaults.\(family)")
                }
                defaults[family] = e
            }
        default: throw APIError.validation("defaults must be an object of family → effect", field: "defaults")
        }
        var stored = top
        stored["ws_id"] = nil
        stored["rules"] = .array(rawRules)
        stored["defaults"] = .object(defaults.mapValues { .string($0.rawValue) })
        return (CompiledPolicy(rules: rules, defaults: defaults), JSONValue.object(stored).jsonText)
    }

    static func compileRule(_ raw: JSONValue, index i: Int) throws -> CompiledPolicy.Rule {
        let at = "rules[\(i)]"
        guard case .object(let r) = raw else { throw APIError.validation("\(at) must be an object", field: at) }
        for key in r.keys where !PolicyLimits.ruleKeys.contains(key) {
            throw APIError.validation("Unknown field '\(key)' in \(at)", field: "\(at).\(key)")
        }
        guard case .string(let id) = r["id"] ?? .null,
            id.range(of: #"^[A-Za-z0-9_.-]{1,64}$"#, options: .regularExpression) != nil
        else { throw APIError.validation("\(at).id must be 1-64 letters, digits, _ . -", field: "\(at).id") }
        guard case .string(let action) = r["action"] ?? .null, PolicyActions.isValidPattern(action) else {
            throw APIError.validation(
                "\(at) (\(id)): unknown action '\(r["action"]?.stringValue ?? "")'", field: "\(at).action")
        }
        guard case .string(let eff) = r["effect"] ?? .null, let effect = PolicyEffect(rawValue: eff) else {
            throw APIError.validation(
                "\(at) (\(id)): effect must be allow, deny or require_approval", field: "\(at).effect")
        }
        var reason: String? = nil
        if case .string(let s) = r["reason"] ?? .null { reason = String(s.prefix(500)) }
        var when: [String: JSONValue] = [:]
        switch r["when"] {
        case nil, .null: break
        case .object(let w): when = w
        default: throw APIError.validation("\(at).when must be an object", field: "\(at).when")
        }
        for key in when.keys where !PolicyLimits.whenKeys.contains(key) {
            throw APIError.validation(
                "Unknown condition '\(key)' in \(at) (\(id)); conditions are "
                    + PolicyLimits.whenKeys.sorted().joined(separator: ", "),
                field: "\(at).when.\(key)")
        }
        func text(_ k: String) throws -> String? {
            guard let v = when[k], v != .null else { return nil }
            guard case .string(let s) = v, !s.isEmpty, s.utf8.count <= 1024 else {
                throw APIError.validation("\(at).when.\(k) must be a non-empty string", field: "\(at).when.\(k)")
            }
            return s
        }
        var command: CompiledPolicy.Regex? = nil
        if let p = try text("command") {
            do { command = try CompiledPolicy.Regex(p) } catch {
                throw APIError.validation(
                    "\(at).when.command is not a valid regular expression", field: "\(at).when.command")
            }
        }
        var roles: Set<String>? = nil
        switch when["actor_role"] {
        case nil, .null: break
        case .string(let s): roles = [s]
        case .array(let a): roles = Set(a.compactMap { $0.stringValue })
        default: break
        }
        if let roles, roles.isEmpty || !roles.allSatisfy({ Role(rawValue: $0) != nil }) {
            throw APIError.validation(
                "\(at).when.actor_role must name roles (viewer, member, admin, owner)", field: "\(at).when.actor_role")
        }
        let kind = try text("actor_kind")
        if let kind, !PolicyLimits.actorKinds.contains(kind) {
            throw APIError.validation(
                "\(at).when.actor_kind must be user, api_key or agent", field: "\(at).when.actor_kind")
        }
        var cost: Int? = nil
        if let v = when["cost_usd_micros"], v != .null {
            guard let n = v.intValue, n >= 0 else {
                throw APIError.validation(
                    "\(at).when.cost_usd_micros must be a whole number", field: "\(at).when.cost_usd_micros")
            }
            cost = n
        }
        var selfApproval = false
        switch r["self_approval"] {
        case nil, .null: break
        case .bool(let b) where effect == .requireApproval || !b: selfApproval = b
        case .bool:
            throw APIError.validation(
                "\(at) (\(id)): self_approval applies to require_approval rules only", field: "\(at).self_approval")
        default: throw APIError.validation("\(at).self_approval must be true or false", field: "\(at).self_approval")
        }
        var rule = CompiledPolicy.Rule(
            id: id, action: Glob(action), effect: effect, reason: reason, command: command,
            path: try text("path").map(Glob.init), host: try text("host").map { Glob($0.lowercased()) },
            secret: try text("secret").map(Glob.init), actorRoles: roles, actorKind: kind, costOver: cost)
        rule.selfApproval = selfApproval
        return rule
    }
}
