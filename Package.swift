// swift-tools-version:6.0
// Kiln: one binary, no third-party packages. System libraries come in through
// system-library targets (SQLite, OpenSSL) and a tiny C shim of our own.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

/// What every domain module may import.
let layers: [Target.Dependency] = ["CShims", "KilnCore", "KilnHTTP", "KilnStore", "KilnCrypto"]
let domains: [Target.Dependency] = [
    "KilnAuth", "KilnAccount", "KilnWorkspaces", "KilnProjects", "KilnShell", "KilnPTY", "KilnAgents", "KilnBudget", "KilnReceipts",
    "KilnSecrets", "KilnPolicy", "KilnMCP", "KilnNotebooks", "KilnCollab", "KilnBrowser",
]

let package = Package(
    name: "kiln",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kiln", targets: ["kiln"]),
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
    ],
    targets: [
        // System libraries and our C shim.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
        .target(name: "CShims", path: "Sources/CShims"),

        // The engine and the shared layers.
        .target(name: "KilnHTTP", dependencies: ["CShims", "COpenSSL"], swiftSettings: strict),
        .target(name: "KilnCrypto", dependencies: ["COpenSSL"], swiftSettings: strict),
        .target(name: "KilnStore", dependencies: ["CSQLite", "CShims", "COpenSSL", "KilnCrypto", "KilnHTTP"], swiftSettings: strict),
        .target(name: "KilnCore", dependencies: ["CShims", "KilnHTTP", "KilnStore", "KilnCrypto", "COpenSSL"], swiftSettings: strict),
        // Domain modules: one floor. Each depends on KilnCore and the layers beneath it, never on
        // another domain; what one needs of another is a protocol in KilnCore (scripts/check-architecture.sh).
        .target(name: "KilnAuth", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnAccount", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnWorkspaces", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnProjects", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnShell", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnPTY", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnAgents", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnBudget", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnReceipts", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnSecrets", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnPolicy", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnMCP", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnNotebooks", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnCollab", dependencies: layers, swiftSettings: strict),
        .target(name: "KilnBrowser", dependencies: layers, swiftSettings: strict),

        .target(name: "KilnApp", dependencies: ["KilnHTTP", "KilnCore", "KilnStore", "KilnCrypto", "COpenSSL"] + domains, swiftSettings: strict),

        // Executables.
        .executableTarget(name: "kiln", dependencies: ["KilnApp", "KilnHTTP", "KilnCore", "KilnStore"], swiftSettings: strict),
        .executableTarget(name: "kiln-bench", dependencies: ["KilnHTTP"], path: "Sources/kiln-bench", swiftSettings: strict),

        // Tests: the engine and layers on their own; a target per domain (its service and route tests);
        // KilnAppTests for what crosses domains (the route table, access, probes, durability). The
        // shared test support (the in-process and socket test apps, clients, fixtures) is a target too.
        .target(name: "KilnTestClients", path: "Tests/KilnTestClients", swiftSettings: strict),
        .testTarget(name: "KilnHTTPTests", dependencies: ["KilnHTTP", "CShims", "KilnCore", "KilnTestClients"], swiftSettings: strict),
        .testTarget(name: "KilnCryptoTests", dependencies: ["KilnCrypto"], swiftSettings: strict),
        .testTarget(name: "KilnCoreTests", dependencies: ["KilnCore", "KilnHTTP"], swiftSettings: strict),
        .testTarget(name: "KilnStoreTests", dependencies: ["KilnStore"], swiftSettings: strict),
        .target(name: "KilnTestSupport", dependencies: ["KilnApp", "KilnTestClients"] + layers + domains, path: "Tests/KilnTestSupport", swiftSettings: strict),
        .testTarget(name: "KilnAuthTests", dependencies: ["KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnAccountTests", dependencies: ["KilnAccount", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnWorkspacesTests", dependencies: ["KilnWorkspaces", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnProjectsTests", dependencies: ["KilnProjects", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnShellTests", dependencies: ["KilnShell", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(
            name: "KilnPTYTests", dependencies: ["KilnPTY", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnAgentsTests", dependencies: ["KilnAgents", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnBudgetTests", dependencies: ["KilnBudget", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnReceiptsTests", dependencies: ["KilnReceipts", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnSecretsTests", dependencies: ["KilnSecrets", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnPolicyTests", dependencies: ["KilnPolicy", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnMCPTests", dependencies: ["KilnMCP", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnNotebooksTests", dependencies: ["KilnNotebooks", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnBrowserTests", dependencies: ["KilnBrowser", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnCollabTests", dependencies: ["KilnCollab", "KilnAuth", "KilnTestSupport", "KilnApp"] + layers, swiftSettings: strict),
        .testTarget(name: "KilnAppTests", dependencies: ["KilnApp", "KilnTestSupport"] + layers + domains, swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
