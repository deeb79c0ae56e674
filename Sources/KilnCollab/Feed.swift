import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// Turns the domain events already on the bus into each workspace's activity feed and into
/// notifications. Domains publish what happened (with an `EventScope` saying where and who);
/// nothing writes feed rows by hand. One consumer handles the events in the order they were
/// published, so the feed reads in the order things happened.
final class CollabFeed: Sendable {
    typealias Item = (event: BusEvent, scope: EventScope)
    let collab: CollabService
    let stream: AsyncStream<Item>
    let input: AsyncStream<Item>.Continuation
    /// Jobs started, until they exit: their kind and command (the exit event carries neither).
    let jobs = Mutex<[String: (kind: String, command: String)]>([:])
    /// The newest seq of each workspace's activity topic (this consumer is its only publisher).
    let heads = Mutex<[String: Int]>([:])

    static func activityTopic(_ wsID: String) -> String { "activity:\(wsID)" }
    static func notificationTopic(_ userID: String) -> String { "notifications:\(userID)" }

    /// The events the feed reads (topic prefix, type); every other event is ignored at once.
    static let watched: Set<String> = [
        "run:run.started", "run:run.completed", "run:run.failed", "run:run.cancelled", "run:file.changed",
        "job:started", "job:exit", "rescan:done", "rescan:failed",
        "ws:run.rolled_back", "ws:member.joined", "ws:member.added", "ws:member.left", "ws:member.removed",
        "ws:member.role_changed", "ws:review.requested", "ws:review.commented", "ws:review.verdict",
        "ws:share_link.created", "ws:share_link.revoked", "ws:share_link.opened", "ws:invitation.created",
        "approvals:approval.required", "approvals:approval.resolved",
    ]

    init(collab: CollabService, bus: EventBus) {
        self.collab = collab
        (stream, input) = AsyncStream<Item>.makeStream(bufferingPolicy: .unbounded)
        let input = self.input
        bus.observe { e, scope in
            guard let colon = e.topic.firstIndex(of: ":"),
                CollabFeed.watched.contains(e.topic[..<colon] + ":" + e.type)
            else { return }
            input.yield((e, scope))
        }
    }

    /// Runs until the server stops.
    func run() async {
        for await (e, scope) in stream {
            do { try await handle(e, scope) } catch {
                ServerLog.error(
                    "activity feed could not record an event",
                    ["topic": .string(e.topic), "type": .string(e.type), "error": .string(String(describing: error))])
            }
        }
    }

    func stop() { input.finish() }

    func handle(_ e: BusEvent, _ scope: EventScope) async throws {
        let data = (try? JSONValue(parsing: e.data))?.objectValue ?? [:]
        let prefix = String(e.topic.prefix { $0 != ":" })
        let topicID = String(e.topic.drop { $0 != ":" }.dropFirst())
        switch (prefix, e.type) {
        case ("run", "run.started"):
            let run = try await collab.agents?.run(topicID, wsID: scope.wsID)?.objectValue ?? [:]
            let prompt = Self.short(run["prompt"]?.stringValue ?? "")
            try await record(
                "run.started", scope, subject: ("run", topicID, prompt), summary: "started an agent run: \(prompt)",
                at: e.createdAt)
        case ("run", let type) where AgentRunEnd.types.contains(type):
            let run = try await collab.agents?.run(topicID, wsID: scope.wsID)?.objectValue ?? [:]
            let end = AgentRunEnd(run: run, type: type, pricing: collab.pricing)
            try await record(
                type, scope, subject: ("run", topicID, end.title), summary: end.summary, at: e.createdAt,
                extra: end.extra)
            if let starter = scope.actorID {
                try await collab.notify(
                    starter, kind: "run_ended", wsID: scope.wsID, title: "Your agent run \(end.word): \(end.title)",
                    subject: ("run", topicID), actor: nil)
            }
        case ("run", "file.changed"):
            let path = data["path"]?.stringValue ?? ""
            try await record(
                "file.changed", scope, subject: ("file", path, path), summary: "agent run \(topicID) changed \(path)",
                at: e.createdAt, extra: ["run_id": .string(topicID)])
        case ("ws", "run.rolled_back"):
            let runID = data["run_id"]?.stringValue ?? ""
            let n = data["paths"]?.arrayValue?.count ?? 0
            try await record(
                "run.rolled_back", scope, subject: ("run", runID, runID),
                summary: "rolled back agent run \(runID) (\(n) file\(n == 1 ? "" : "s") restored)", at: e.createdAt)
        case ("job", "started"):
            jobs.withLock {
                $0[topicID] = (data["kind"]?.stringValue ?? "shell", data["command"]?.stringValue ?? "")
                if $0.count > 10_000 { $0.removeAll() }
            }
        case ("job", "exit"):
            let (kind, command) = jobs.withLock { $0.removeValue(forKey: topicID) } ?? ("shell", "")
            let status = data["status"]?.stringValue ?? "finished"
            var summary = "\(kind == "test" ? "test run" : "job") \(status)"
            if let code = data["code"]?.intValue { summary += " (exit \(code))" }
            if let s = data["summary"]?.objectValue {
                let parts = ["passed", "failed", "skipped"].compactMap { k in s[k]?.intValue.map { "\($0) \(k)" } }
                if !parts.isEmpty { summary += ": " + parts.joined(separator: ", ") }
            }
            var extra: [String: JSONValue] = ["status": .string(status)]
            if let s = data["summary"] { extra["result"] = s }
            try await record(
                kind == "test" ? "test.finished" : "job.finished", scope,
                subject: ("job", topicID, Self.short(command)), summary: summary + " · " + Self.short(command),
                at: e.createdAt, extra: extra)
        case ("rescan", let type):
            let files = data["files"]?.intValue ?? data["indexed"]?.intValue
            let name = try await collab.projectName(scope.projectID)
            try await record(
                type == "done" ? "project.rescanned" : "project.rescan_failed", scope,
                subject: ("project", scope.projectID ?? "", name),
                summary: type == "done"
                    ? "rescanned \(name)" + (files.map { " (\($0) files)" } ?? "") : "rescan of \(name) failed",
                at: e.createdAt)
        case ("approvals", let type):
            try await approval(type, data, scope, at: e.createdAt)
        case ("ws", let type) where type.hasPrefix("member."):
            try await member(type, data, scope, at: e.createdAt)
        case ("ws", "review.requested"), ("ws", "review.commented"), ("ws", "review.verdict"):
            try await review(e.type, data, scope, at: e.createdAt)
        case ("ws", "share_link.created"), ("ws", "share_link.revoked"):
            let id = data["link_id"]?.stringValue ?? ""
            let what = data["subject_type"]?.stringValue ?? "run"
            try await record(
                e.type, scope, subject: ("share_link", id, what),
                summary: (e.type == "share_link.created"
                    ? "shared a \(what) by link" : "revoked a share link of a \(what)"),
                at: e.createdAt)
        case ("ws", "share_link.opened"):
            if let owner = data["created_by"]?.stringValue {
                let what = data["subject_type"]?.stringValue ?? "run"
                try await collab.notify(
                    owner, kind: "share_link_opened", wsID: scope.wsID,
                    title: "Your share link of a \(what) was opened for the first time",
                    subject: ("share_link", data["link_id"]?.stringValue ?? ""), actor: nil)
            }
        case ("ws", "invitation.created"):
            let email = data["email"]?.stringValue ?? ""
            let role = data["role"]?.stringValue ?? "member"
            try await record(
                "invitation.created", scope, subject: ("invitation", data["invitation_id"]?.stringValue ?? "", email),
                summary: "invited \(email) as \(role)", at: e.createdAt)
            if let invitee = data["user_id"]?.stringValue {
                let ws = try await collab.members?.workspaceName(scope.wsID) ?? "a workspace"
                try await collab.notify(
                    invitee, kind: "invited", wsID: scope.wsID,
                    title: "You were invited to \(ws) as \(role); the link is in your mail",
                    subject: ("workspace", scope.wsID), actor: scope.actorID)
            }
        default:
            break
        }
    }

    /// An action a policy held: the members who may decide are told (not the requester); once decided,
    /// the requester is told how.
    func approval(_ type: String, _ data: [String: JSONValue], _ scope: EventScope, at: Date) async throws {
        let id = data["id"]?.stringValue ?? ""
        let action = data["action"]?.stringValue ?? "an action"
        let requester = data["requested_by"]?.stringValue ?? ""
        if type == "approval.required" {
            try await record(
                "approval.requested", scope, subject: ("approval", id, action),
                summary: "asked for an approval of \(action)", at: at)
            let who = try await collab.name(requester)
            for (uid, role) in try await collab.members?.memberRoles(wsID: scope.wsID) ?? []
            where uid != requester && role >= .member {
                try await collab.notify(
                    uid, kind: "approval_requested", wsID: scope.wsID,
                    title: "\(who) waits for an approval of \(action)",
                    subject: ("approval", id), actor: requester)
            }
            return
        }
        let state = data["expired"] == .bool(true) ? "expired" : data["state"]?.stringValue ?? "decided"
        guard state != "pending" else { return }
        try await record(
            "approval.\(state)", scope, subject: ("approval", id, action), summary: "\(state) \(action)", at: at)
        if requester != scope.actorID {
            try await collab.notify(
                requester, kind: "approval_decided", wsID: scope.wsID, title: "Your \(action) was \(state)",
                subject: ("approval", id), actor: scope.actorID)
        }
    }

    func member(_ type: String, _ data: [String: JSONValue], _ scope: EventScope, at: Date) async throws {
        let userID = data["user_id"]?.stringValue ?? ""
        let role = data["role"]?.stringValue ?? ""
        let who = try await collab.name(userID)
        let summary: String =
            switch type {
            case "member.joined": "joined as \(role)"
            case "member.added": "added \(who) as \(role)"
            case "member.left": "left the workspace"
            case "member.removed": "removed \(who)"
            default: "changed \(who)'s role from \(data["from"]?.stringValue ?? "?") to \(role)"
            }
        try await record(type, scope, subject: ("user", userID, who), summary: summary, at: at)
        let ws = try await collab.members?.workspaceName(scope.wsID) ?? "a workspace"
        if type == "member.added", userID != scope.actorID {
            try await collab.notify(
                userID, kind: "invited",
                wsID: scope.wsID, title: "You were added to \(ws) as \(role); you can leave it from its members page",
                subject: ("workspace", scope.wsID), actor: scope.actorID)
        } else if type == "member.role_changed", userID != scope.actorID {
            try await collab.notify(
                userID, kind: "role_changed", wsID: scope.wsID, title: "Your role in \(ws) is now \(role)",
                subject: ("workspace", scope.wsID), actor: scope.actorID)
        }
    }

    func review(_ type: String, _ data: [String: JSONValue], _ scope: EventScope, at: Date) async throws {
        let id = data["review_id"]?.stringValue ?? ""
        let title = data["title"]?.stringValue ?? id
        let actor = scope.actorID ?? ""
        let actorName = try await collab.name(actor)
        switch type {
        case "review.requested":
            let reviewers = (data["reviewers"]?.arrayValue ?? []).compactMap(\.stringValue)
            var names: [String] = []
            for r in reviewers { names.append(try await collab.name(r)) }
            try await record(
                type, scope, subject: ("review", id, title),
                summary: "requested a review of \(title) from \(names.joined(separator: ", "))", at: at)
            for r in reviewers where r != actor {
                try await collab.notify(
                    r, kind: "review_requested", wsID: scope.wsID, title: "\(actorName) asked you to review \(title)",
                    subject: ("review", id), actor: actor)
            }
        case "review.commented":
            try await record(type, scope, subject: ("review", id, title), summary: "commented on \(title)", at: at)
            for m in (data["mentions"]?.arrayValue ?? []).compactMap(\.stringValue) where m != actor {
                try await collab.notify(
                    m, kind: "mention", wsID: scope.wsID, title: "\(actorName) mentioned you on \(title)",
                    subject: ("review", id), actor: actor, detail: ["comment_id": data["comment_id"] ?? .null])
            }
        default:
            let verdict = data["verdict"]?.stringValue ?? "comment"
            let words =
                ["approve": "approved", "request_changes": "requested changes on", "comment": "commented on"][verdict]
                ?? verdict
            try await record(
                type, scope, subject: ("review", id, title), summary: "\(words) \(title)", at: at,
                extra: ["verdict": .string(verdict), "state": data["state"] ?? .null])
            if let requester = data["requested_by"]?.stringValue, requester != actor {
                try await collab.notify(
                    requester, kind: "review_verdict", wsID: scope.wsID, title: "\(actorName) \(words) \(title)",
                    subject: ("review", id), actor: actor)
            }
        }
    }

    /// Appends an item to the workspace's feed: stored for the list, published for the live stream.
    func record(
        _ kind: String, _ scope: EventScope, subject: (type: String, id: String, title: String), summary: String,
        at: Date, extra: [String: JSONValue] = [:]
    ) async throws {
        let topic = Self.activityTopic(scope.wsID)
        let known = heads.withLock { $0[scope.wsID] }
        let actorName: JSONValue = scope.actorID == nil ? .null : .string(try await collab.name(scope.actorID ?? ""))
        var head = known ?? 0
        if known == nil { head = try await collab.bus.head(topic: topic) }
        let seq = head + 1
        var item: [String: JSONValue] = [
            "id": .int(seq), "kind": .string(kind), "ws_id": .string(scope.wsID),
            "actor": scope.actorID.map { .string($0) } ?? .null,
            "actor_name": actorName,
            "subject": ["type": .string(subject.type), "id": .string(subject.id), "title": .string(subject.title)],
            "summary": .string(summary), "project_id": scope.projectID.map { .string($0) } ?? .null,
            "created_at": .string(HTTPDate.iso8601(at)),
        ]
        for (k, v) in extra { item[k] = v }
        let text = JSONValue.object(item).jsonText
        let published = try await collab.bus.publish(topic: topic, type: kind, data: text)
        heads.withLock { $0[scope.wsID] = published }
        try await collab.store.insertActivity(
            ws: scope.wsID, seq: published, kind: kind, actor: scope.actorID, projectID: scope.projectID,
            item: published == seq ? text : JSONValue.object(item.merging(["id": .int(published)]) { $1 }).jsonText,
            at: at)
    }

    static func short(_ s: String, _ n: Int = 80) -> String {
        let line = s.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? ""
        return line.count > n ? String(line.prefix(n - 1)) + "…" : line
    }
}

/// How an ended agent run reads in the feed: its outcome, steps and cost.
struct AgentRunEnd {
    static let types: Set<String> = ["run.completed", "run.failed", "run.cancelled"]
    let title: String
    let word: String
    let summary: String
    let extra: [String: JSONValue]

    init(run: [String: JSONValue], type: String, pricing: (any Pricing)?) {
        title = CollabFeed.short(run["prompt"]?.stringValue ?? "")
        word =
            ["run.completed": "completed", "run.failed": "failed", "run.cancelled": "was cancelled"][type] ?? "ended"
        let input = run["input_tokens"]?.intValue ?? 0
        let output = run["output_tokens"]?.intValue ?? 0
        let micros = pricing?.cost(model: run["model"]?.stringValue ?? "", input: input, output: output) ?? 0
        let steps = run["steps"]?.intValue ?? 0
        let cost = Double(micros) / 1_000_000
        summary =
            "agent run \(word) after \(steps) step\(steps == 1 ? "" : "s"), \(input + output) tokens, "
            + String(format: "$%.4f", cost)
        extra = [
            "cost_usd": .double(cost), "input_tokens": .int(input), "output_tokens": .int(output), "steps": .int(steps),
            "status": run["status"] ?? .null,
        ]
    }
}

extension CollabService {
    /// The workspace's activity, newest first (`cursor`: the last page's last item).
    func activity(
        wsID: String, page: PageRequest, kind: String?, actor: String?, projectID: String?
    ) async throws -> JSONValue {
        let before = page.cursor.flatMap { Int($0) } ?? Int.max
        let rows = try await store.activity(
            ws: wsID, before: before, limit: page.limit + 1, kind: kind, actor: actor, projectID: projectID)
        let items = rows.compactMap { r in r.string("item").flatMap { try? JSONValue(parsing: $0) } }
        let p = Page(fetched: items, limit: page.limit) { String($0.objectValue?["id"]?.intValue ?? 0) }
        return ["items": .array(p.items), "next_cursor": p.nextCursor.map { .string($0) } ?? .null]
    }
}
