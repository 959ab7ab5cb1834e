// The generated Kotlin bindings on the JVM (JNA), against a running scrim-cloud.
//
// Driven by tests/python/test_sdk.py, which starts the server, writes the fixture models and
// compiles this file together with mobile-ffi/bindings/kotlin when a Kotlin compiler is
// available (SCRIM_KOTLINC). Arguments: MODELS_DIR OTHER_SIZE_MODELS_DIR SERVER_URL TOKEN.

package dev.scrim.mobile.test

import dev.scrim.mobile.ClientConfig
import dev.scrim.mobile.Perturber
import dev.scrim.mobile.ScrimClient
import dev.scrim.mobile.ScrimException
import java.awt.image.BufferedImage
import java.io.ByteArrayOutputStream
import java.io.File
import javax.imageio.ImageIO
import kotlin.system.exitProcess

/** A width × height gradient encoded as `format` ("png" or "jpg") with the JDK's ImageIO. */
fun image(width: Int, height: Int, format: String): ByteArray {
    val img = BufferedImage(width, height, BufferedImage.TYPE_INT_RGB)
    for (y in 0 until height) {
        for (x in 0 until width) {
            img.setRGB(x, y, ((x * 255 / width) shl 16) or ((y * 255 / height) shl 8) or ((x * y) and 0xff))
        }
    }
    val out = ByteArrayOutputStream()
    check(ImageIO.write(img, format, out)) { "no ImageIO writer for $format" }
    return out.toByteArray()
}

fun loadPerturber(dir: String) =
    Perturber(File("$dir/perturber.onnx").readBytes(), File("$dir/perturber.json").readText())

fun main(args: Array<String>) {
    val (models, otherModels, url, token) = args
    val size = 16u
    var passed = 0
    var failed = 0
    fun case(name: String, body: () -> Unit) {
        try {
            body()
            passed++
            println("ok   kotlin: $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL kotlin: $name: $e")
        }
    }

    val config = ClientConfig(baseUrl = url, apiToken = token, maxRetries = 1u, initialBackoffMs = 20uL)
    loadPerturber(models).use { perturber ->
        ScrimClient(config).use { client ->
            case("perturb a JPEG to the model size") {
                perturber.perturb(image(40, 30, "jpg")).use { img ->
                    check(img.width() == size && img.height() == size) { "${img.width()}x${img.height()}" }
                    check(img.png().copyOfRange(1, 4).decodeToString() == "PNG")
                }
            }
            case("classify returns the fixture labels, best first") {
                val result = client.classifyImage(perturber, image(32, 20, "png"))
                check(result.labels.map { it.label }.sorted() == listOf("bird", "cat", "dog")) { result.toString() }
                check(Math.abs(result.labels.sumOf { it.score.toDouble() } - 1.0) < 1e-3)
                check(result.labels.zipWithNext().all { (a, b) -> a.score >= b.score })
            }
            case("the token is not printed") {
                check(!config.toString().contains(token)) { config.toString() }
            }
            case("invalid image is ScrimException.InvalidImage") {
                try {
                    perturber.perturb("not an image".toByteArray())
                    error("no exception")
                } catch (e: ScrimException.InvalidImage) {
                    check(e.detail.isNotEmpty())
                }
            }
        }
    }
    case("wrong size upload is ScrimException.Server(400, wrong_size)") {
        loadPerturber(otherModels).use { small ->
            ScrimClient(config).use { client ->
                try {
                    client.classifyImage(small, image(20, 20, "png"))
                    error("no exception")
                } catch (e: ScrimException.Server) {
                    check(e.status.toInt() == 400 && e.code == "wrong_size") { e.toString() }
                }
            }
        }
    }
    case("wrong token is ScrimException.Unauthorized") {
        loadPerturber(models).use { perturber ->
            ScrimClient(config.copy(apiToken = "wrong")).use { client ->
                try {
                    client.classifyImage(perturber, image(16, 16, "png"))
                    error("no exception")
                } catch (e: ScrimException.Unauthorized) {
                    // expected
                }
            }
        }
    }
    println("kotlin: $passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
