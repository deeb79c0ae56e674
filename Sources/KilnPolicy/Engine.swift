import Foundation
import KilnCore
import KilnHTTP

/// A workspace's policy, compiled: rules in order (the first that matches decides), then the default
/// of the action's family, then allow. Regular expressions and globs are compiled once per version.
struct CompiledPolicy: Sendable {
    struct Rule: Sendable {
        let id: String
        let action: Glob
        let effect: PolicyEffect
        let reason: String?
        let command: Regex?
        let path: Glob?
        let host: Glob?
        let secret: Glob?
        let actorRoles: Set<String>?
        let actorKind: String?
        let costOver: Int?
        /// `require_approval` only: the requester may approve their own request.
        var selfApproval = false
    }

    /// `NSRegularExpression` wrapped for Sendable use (it is immutable once made).
    final class Regex: @unchecked Sendable {
        let re: NSRegularExpression
        init(_ pattern: String) throws { re = try NSRegularExpression(pattern: pattern) }
        func matches(_ s: String) -> Bool {
            re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
        }
    }

    let rules: [Rule]
    let defaults: [String: PolicyEffect]
    /// For each known action, the rules that can apply to it, in order: a decision looks at those
    /// only (a few of hundreds), and matches no action pattern at run time.
    let byAction: [String: [Int]]

    init(rules: [Rule], defaults: [String: PolicyEffect]) {
        self.rules = rules
        self.defaults = defaults
        var index: [String: [Int]] = [:]
        for action in PolicyActions.fixed {
            index[action] = rules.indices.filter { rules[$0].action.matches(action) }
        }
        byAction = index
    }

    /// The facts as bytes, converted once per decision rather than once per rule.
    struct Facts {
        let c: PolicyContext
        let path: [UInt8]?
        let host: [UInt8]?
        let secret: [UInt8]?
        init(_ c: PolicyContext) {
            self.c = c
            path = c.path.map { Array($0.utf8) }
            host = c.host.map { Array($0.lowercased().utf8) }
            secret = c.secret.map { Array($0.utf8) }
        }
    }

    func decide(_ action: String, _ c: PolicyContext) -> PolicyDecision {
        let facts = Facts(c)
        let candidates = byAction[action] ?? rules.indices.filter { rules[$0].action.matches(action) }
        for i in candidates where Self.holds(rules[i], facts) {
            let r = rules[i]
            return PolicyDecision(effect: r.effect, ruleID: r.id, reason: r.reason, selfApproval: r.selfApproval)
        }
        let family = PolicyActions.family(of: action)
        if let d = defaults[family] {
            return PolicyDecision(effect: d, ruleID: nil, reason: "the default for \(family)")
        }
        return PolicyDecision(effect: .allow, ruleID: nil, reason: nil)
    }

    /// Every condition a rule names must hold; a condition on a field the action does not carry fails.
    static func holds(_ r: Rule, _ f: Facts) -> Bool {
        let c = f.c
        if let g = r.path { guard let v = f.path, g.matches(v[...]) else { return false } }
        if let g = r.host { guard let v = f.host, g.matches(v[...]) else { return false } }
        if let g = r.secret { guard let v = f.secret, g.matches(v[...]) else { return false } }
        if let roles = r.actorRoles { guard let v = c.actorRole, roles.contains(v) else { return false } }
        if let k = r.actorKind { guard c.actorKind == k else { return false } }
        if let over = r.costOver { guard let v = c.costUsdMicros, v > over else { return false } }
        // The regular expression last: the dearest check runs only when the cheap ones held.
        if let re = r.command { guard let v = c.command, re.matches(v) else { return false } }
        return true
    }
}

/// Shell-style globs: `*` any run without `/`, `**` any run, `?` one character. For actions and names
/// `/` never occurs, so `*` covers everything.
struct Glob: Sendable {
    let parts: [UInt8]
    init(_ pattern: String) { parts = Array(pattern.utf8) }

    func matches(_ s: String) -> Bool { Self.match(parts[...], Array(s.utf8)[...]) }
    func matches(_ s: ArraySlice<UInt8>) -> Bool { Self.match(parts[...], s) }

    static func match(_ p: ArraySlice<UInt8>, _ s: ArraySlice<UInt8>) -> Bool {
        var p = p
        var s = s
        // Iterative with one backtrack point per star (enough for these patterns, linear in practice).
        var starP: ArraySlice<UInt8>? = nil
        var starS: ArraySlice<UInt8>? = nil
        var starCrossesSlash = false
        while !s.isEmpty {
            if let c = p.first, c == UInt8(ascii: "*") {
                let double = p.dropFirst().first == UInt8(ascii: "*")
                p = p.dropFirst(double ? 2 : 1)
                if double && p.first == UInt8(ascii: "/") && s.first != UInt8(ascii: "/") {
                    // `**/x` also matches `x` at the top.
                    if match(p.dropFirst(), s) { return true }
                }
                starP = p
                starS = s
                starCrossesSlash = double
                continue
            }
            if let c = p.first, c == UInt8(ascii: "?") || c == s.first! {
                if c == UInt8(ascii: "?") && s.first! == UInt8(ascii: "/") {
                    // `?` never matches a slash
                } else {
                    p = p.dropFirst()
                    s = s.dropFirst()
                    continue
                }
            }
            guard let sp = starP, var ss = starS, !ss.isEmpty else { return false }
            if !starCrossesSlash && ss.first == UInt8(ascii: "/") { return false }
            ss = ss.dropFirst()
            starS = ss
            p = sp
            s = ss
        }
        while p.first == UInt8(ascii: "*") { p = p.dropFirst() }
        return p.isEmpty
    }
}
