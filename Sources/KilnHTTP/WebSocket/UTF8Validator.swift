/// Incremental UTF-8 validation (RFC 3629) that keeps its state across fragments, so a text
/// message is refused at the first invalid byte rather than when it ends.
public struct UTF8Validator: Sendable {
    var need = 0
    var lower: UInt8 = 0x80
    var upper: UInt8 = 0xBF

    public init() {}

    /// True when the message ended on a character boundary.
    public var isComplete: Bool { need == 0 }

    /// Feeds bytes; false at the first byte that cannot be part of valid UTF-8.
    public mutating func feed(_ buf: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        let n = buf.count
        guard let base = buf.baseAddress else { return true }
        while i < n {
            if need == 0 {
                // ASCII fast path, 8 bytes at a time.
                while i + 8 <= n {
                    let w = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                    if w & 0x8080_8080_8080_8080 != 0 { break }
                    i += 8
                }
                if i >= n { break }
                let b = base[i]
                i += 1
                if b < 0x80 { continue }
                switch b {
                case 0xC2...0xDF:
                    need = 1
                    lower = 0x80
                    upper = 0xBF
                case 0xE0:
                    need = 2
                    lower = 0xA0
                    upper = 0xBF
                case 0xE1...0xEC, 0xEE, 0xEF:
                    need = 2
                    lower = 0x80
                    upper = 0xBF
                case 0xED:
                    need = 2
                    lower = 0x80
                    upper = 0x9F
                case 0xF0:
                    need = 3
                    lower = 0x90
                    upper = 0xBF
                case 0xF1...0xF3:
                    need = 3
                    lower = 0x80
                    upper = 0xBF
                case 0xF4:
                    need = 3
                    lower = 0x80
                    upper = 0x8F
                default: return false
                }
            } else {
                let b = base[i]
                i += 1
                if b < lower || b > upper { return false }
                lower = 0x80
                upper = 0xBF
                need -= 1
            }
        }
        return true
    }

    public mutating func feed(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBufferPointer { feed($0) } }
}
