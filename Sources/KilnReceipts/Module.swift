import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

public enum ReceiptPermission {
    public static let read = Permission(
        "receipts:read", "Read, verify and re-check the workspace's run receipts", minimumRole: .viewer)
}

/// Receipts: a signed, hash-chained record of every agent run, verifiable with ordinary tools.
public struct ReceiptsModule: KilnModule {
    public let name = "receipts"
    /// The chain; the application hands it to agent runs as a `RunObserver`.
    public let service: ReceiptService

    /// `pricing`: what model use costs (the budget domain), recorded in each receipt.
    public init(services: Services, projects: any ProjectDirectory, pricing: any Pricing) {
        service = ReceiptService(services: services, projects: projects, pricing: pricing)
    }

    public var migrations: [Migration] { ReceiptMigrations.all }
    public var permissions: [Permission] { [ReceiptPermission.read] }

    public func register(_ routes: Routes) { ReceiptRoutes(receipts: service).register(routes) }

    public static var commands: [Command] {
        [
            Command(
                name: "receipts", usage: "receipts verify --ws ID",
                help: "verify a workspace's receipt chain offline (hashes, links, signatures)",
                run: verifyCommand)
        ]
    }

    static let verifyHelp = """
        usage: kiln receipts verify --ws WS_ID [--data-dir DIR]

        Recomputes every receipt hash, prev_hash link and Ed25519 signature of the workspace's chain
        from the database and receipt.key in the data dir; prints {ok, checked, first_break?} and exits 1 on a break.
        """

    /// `kiln receipts verify`: the same walk as the route, offline, over a data dir.
    @Sendable static func verifyCommand(_ args: [String], _ io: CommandIO) async -> Int32 {
        let wantsHelp = args.contains("--help") || args.contains("-h")
        guard args.first == "verify", !wantsHelp else {
            io.out(verifyHelp)
            return wantsHelp ? 0 : 2
        }
        var rest = Array(args.dropFirst())
        var ws: String? = nil
        if let i = rest.firstIndex(of: "--ws"), i + 1 < rest.count {
            ws = rest[i + 1]
            rest.removeSubrange(i...(i + 1))
        }
        guard let ws else {
            io.err("kiln receipts verify: --ws WS_ID is required")
            return 2
        }
        do {
            let (config, _) = try io.loadConfig(rest)
            guard let key = try ReceiptChain.loadKey(dataDir: config.dataDir, create: false) else {
                throw Crypto.Failure.invalidInput("no receipt key in \(config.dataDir) (receipt.key)")
            }
            let store = ReceiptStore(db: try config.openDatabase(readers: 1))
            let rows = try store.chainSync(wsID: ws)
            let v = ReceiptChain.verify(rows: rows, publicKey: key.publicKey)
            io.out(v.json.jsonText)
            return v.ok ? 0 : 1
        } catch {
            io.err("kiln receipts verify: \(error)")
            return 1
        }
    }
}
