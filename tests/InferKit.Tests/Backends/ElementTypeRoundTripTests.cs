using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.Tests.Backends;

/// <summary>One provider serving an identity model for every supported element type.</summary>
public sealed class IdentityModelsFixture : IAsyncLifetime
{
    public const int Width = 4;

    public ServiceProvider Services { get; private set; } = null!;

    public static string ModelName(OnnxElementType type) => $"identity-{type}";

    public async Task InitializeAsync()
    {
        Services = OnnxTestServices.Build(b =>
        {
            foreach (var type in OnnxElementTypes.All)
            {
                b.AddOnnxModel(ModelName(type), ModelSource.FromBytes(new IdentityModel(type, Width).ToOnnx()), o => o.Onnx.IntraOpThreads = 1);
            }
        });
        await Services.Registry().LoadAllAsync();
    }

    public async Task DisposeAsync() => await Services.DisposeAsync();
}

public sealed class ElementTypeRoundTripTests(IdentityModelsFixture fixture) : IClassFixture<IdentityModelsFixture>
{
    public static TheoryData<OnnxElementType> Types() => [.. OnnxElementTypes.All];

    [Theory]
    [MemberData(nameof(Types))]
    public void The_signature_reports_the_element_type(OnnxElementType type)
    {
        var signature = fixture.Services.Registry().GetModel(IdentityModelsFixture.ModelName(type)).Signature!;
        var input = Assert.Single(signature.Inputs);
        var output = Assert.Single(signature.Outputs);
        Assert.Equal(type.ToInferKit(), input.ElementType);
        Assert.Equal(type.ToInferKit(), output.ElementType);
        Assert.Equal(new long[] { -1, IdentityModelsFixture.Width }, input.Shape);
        Assert.True(signature.IsBatchable);
    }

    [Theory]
    [MemberData(nameof(Types))]
    public async Task Values_come_back_unchanged(OnnxElementType type)
    {
        const int rows = 3;
        var input = Sample(type, rows);

        using var response = await fixture.Services.Client().InferAsync(IdentityModelsFixture.ModelName(type), new InferenceRequest(input));

        Assert.True(response.IsSuccess, response.Message);
        var output = response[IdentityModel.OutputName];
        Assert.Equal(type.ToInferKit(), output.ElementType);
        Assert.Equal(new long[] { rows, IdentityModelsFixture.Width }, output.Shape.ToArray());
        if (type == OnnxElementType.String)
        {
            Assert.Equal(input.GetStrings().ToArray(), output.GetStrings().ToArray());
        }
        else
        {
            Assert.Equal(input.Bytes.ToArray(), output.Bytes.ToArray());
        }
    }

    [Fact]
    public async Task Typed_reads_of_outputs_give_the_values_sent()
    {
        using (var r = await Infer(OnnxElementType.BFloat16, Tensor.Create("x", new[] { (BFloat16)1.5f, (BFloat16)(-0.0078125f), (BFloat16)3e38f, (BFloat16)float.NegativeInfinity }, 1, 4)))
        {
            Assert.Equal(new[] { 1.5f, -0.0078125f, (float)(BFloat16)3e38f, float.NegativeInfinity }, r["y"].ToArray<BFloat16>().Select(v => (float)v));
        }

        using (var r = await Infer(OnnxElementType.Float16, Tensor.Create("x", new[] { (Half)0.5f, (Half)(-65504f), Half.Epsilon, Half.NaN }, 1, 4)))
        {
            var values = r["y"].ToArray<Half>();
            Assert.Equal((Half)0.5f, values[0]);
            Assert.Equal((Half)(-65504f), values[1]);
            Assert.Equal(Half.Epsilon, values[2]);
            Assert.True(Half.IsNaN(values[3]));
        }

        using (var r = await Infer(OnnxElementType.Bool, Tensor.Create("x", new[] { true, false, false, true }, 1, 4)))
        {
            Assert.Equal(new[] { true, false, false, true }, r["y"].ToArray<bool>());
        }

        using (var r = await Infer(OnnxElementType.UInt64, Tensor.Create("x", new[] { ulong.MaxValue, 0UL, 1UL << 63, 42UL }, 1, 4)))
        {
            Assert.Equal(new[] { ulong.MaxValue, 0UL, 1UL << 63, 42UL }, r["y"].ToArray<ulong>());
        }

        using (var r = await Infer(OnnxElementType.String, Tensor.Create("x", new[] { string.Empty, "naïve café", "日本語テキスト", new string('x', 10_000) }, 1, 4)))
        {
            Assert.Equal(new[] { string.Empty, "naïve café", "日本語テキスト", new string('x', 10_000) }, r["y"].ToArray<string>());
        }
    }

    [Fact]
    public async Task A_null_string_is_refused_naming_the_input_and_the_element_instead_of_sent_as_an_empty_one()
    {
        var model = IdentityModelsFixture.ModelName(OnnxElementType.String);
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () =>
            await fixture.Services.Client().InferAsync(model, new InferenceRequest(Tensor.Create("x", new[] { "a", "b", null!, "d" }, 1, 4))));
        Assert.Equal(model, ex.Model);
        Assert.Equal("x", ex.Input);
        Assert.Contains("element 2", ex.Message, StringComparison.Ordinal);
        Assert.Contains("null", ex.Message, StringComparison.Ordinal);

        using var good = await Infer(OnnxElementType.String, Tensor.Create("x", new[] { "a", "b", string.Empty, "d" }, 1, 4));
        Assert.Equal(new[] { "a", "b", string.Empty, "d" }, good["y"].ToArray<string>());
    }

    private async Task<InferenceResponse> Infer(OnnxElementType type, Tensor input)
    {
        var response = await fixture.Services.Client().InferAsync(IdentityModelsFixture.ModelName(type), new InferenceRequest(input));
        Assert.True(response.IsSuccess, response.Message);
        return response;
    }

    /// <summary>rows × 4 distinct values of the type, extremes included.</summary>
    private static Tensor Sample(OnnxElementType type, int rows)
    {
        int n = rows * IdentityModelsFixture.Width;
        long[] shape = [rows, IdentityModelsFixture.Width];
        return type switch
        {
            OnnxElementType.Float => Tensor.Create("x", Fill(n, i => i == 0 ? float.MaxValue : i == 1 ? float.Epsilon : (i * 1.25f) - 3), shape),
            OnnxElementType.Float16 => Tensor.Create("x", Fill(n, i => i == 0 ? Half.MaxValue : (Half)((i * 0.5f) - 2)), shape),
            OnnxElementType.BFloat16 => Tensor.Create("x", Fill(n, i => (BFloat16)((i * 3.5f) - 7)), shape),
            OnnxElementType.Double => Tensor.Create("x", Fill(n, i => i == 0 ? double.MinValue : Math.PI * i), shape),
            OnnxElementType.Int8 => Tensor.Create("x", Fill(n, i => i == 0 ? sbyte.MinValue : (sbyte)(i * 11)), shape),
            OnnxElementType.Int16 => Tensor.Create("x", Fill(n, i => i == 0 ? short.MinValue : (short)(i * 1001)), shape),
            OnnxElementType.Int32 => Tensor.Create("x", Fill(n, i => i == 0 ? int.MinValue : i * 100_003), shape),
            OnnxElementType.Int64 => Tensor.Create("x", Fill(n, i => i == 0 ? long.MinValue : i * 10_000_000_019L), shape),
            OnnxElementType.UInt8 => Tensor.Create("x", Fill(n, i => i == 0 ? byte.MaxValue : (byte)(i * 7)), shape),
            OnnxElementType.UInt16 => Tensor.Create("x", Fill(n, i => i == 0 ? ushort.MaxValue : (ushort)(i * 999)), shape),
            OnnxElementType.UInt32 => Tensor.Create("x", Fill(n, i => i == 0 ? uint.MaxValue : (uint)i * 123_457u), shape),
            OnnxElementType.UInt64 => Tensor.Create("x", Fill(n, i => i == 0 ? ulong.MaxValue : (ulong)i * 98_765_432_101UL), shape),
            OnnxElementType.Bool => Tensor.Create("x", Fill(n, i => i % 3 == 0), shape),
            OnnxElementType.String => Tensor.Create("x", Fill(n, i => i == 0 ? string.Empty : $"s{i}-ü"), shape),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
        };
    }

    private static T[] Fill<T>(int n, Func<int, T> value)
    {
        var result = new T[n];
        for (int i = 0; i < n; i++)
        {
            result[i] = value(i);
        }

        return result;
    }
}
